class EvaluateProbe: pass
