"""Tests of keras_landscape.data.specs: spec parsing, every kind, and adapt_to_model."""

import gzip
import struct
import zipfile

import numpy as np
import pytest

from keras_landscape.data.specs import (
    KINDS,
    Dataset,
    Teacher,
    adapt_to_model,
    load_data,
    parse_spec,
)
from keras_landscape.errors import UserError

# ---------------------------------------------------------------- parse_spec / errors


def test_parse_spec_splits_kind_positionals_and_options():
    assert parse_spec("npz:/data/mnist.npz:limit=5000") == (
        "npz",
        ["/data/mnist.npz"],
        {"limit": "5000"},
    )
    assert parse_spec("tfds:mnist:test") == ("tfds", ["mnist", "test"], {})
    assert parse_spec("teacher:d=10,h=4,n=2000") == (
        "teacher",
        [],
        {"d": "10", "h": "4", "n": "2000"},
    )
    assert parse_spec("Cubic") == ("cubic", [], {})


def test_parse_spec_keeps_colons_inside_slices():
    assert parse_spec("tfds:mnist:train[:10%]:limit=5") == (
        "tfds",
        ["mnist", "train[:10%]"],
        {"limit": "5"},
    )


@pytest.mark.parametrize(
    "spec, message",
    [
        ("", "Empty data spec"),
        ("teacher:d=10,h", "Malformed option 'h'"),
        ("teacher:d=10:d=3", "given twice"),
    ],
)
def test_parse_spec_rejects_malformed(spec, message):
    with pytest.raises(UserError, match=message):
        parse_spec(spec)


def test_unknown_kind_lists_valid_kinds():
    with pytest.raises(UserError) as info:
        load_data("mnistt")
    assert "'mnistt'" in str(info.value)
    for kind in KINDS:
        assert kind in str(info.value)


def test_unknown_option_lists_accepted_ones():
    with pytest.raises(UserError) as info:
        load_data("cubic:n=10,bogus=3")
    assert "bogus" in str(info.value)
    assert "limit, n, n_test, seed" in str(info.value)


@pytest.mark.parametrize(
    "spec, message",
    [
        ("cubic:n=ten", "n='ten'.*integer >= 1"),
        ("cubic:n=0", "integer >= 1"),
        ("teacher:noise=-1", "noise='-1'.*>= 0"),
        ("cubic:extra", "positional"),
        ("npz", "the form is npz:PATH"),
        ("text:/x:split_test=train", "'test' or 'valid'"),
    ],
)
def test_bad_option_values_and_positionals(spec, message):
    with pytest.raises(UserError, match=message):
        load_data(spec)


def test_negative_run_seed_is_rejected():
    with pytest.raises(UserError, match="integer >= 0"):
        load_data("cubic", seed=-1)


def test_split_access():
    data = load_data("cubic:n=10,n_test=0")
    assert data.has_split("train") and not data.has_split("test") and not data.has_split("x")
    x, y = data.split("train")
    assert x is data.x_train and y is data.y_train
    with pytest.raises(UserError, match="no test split"):
        data.split("test")
    with pytest.raises(UserError, match="'train' and 'test'"):
        data.split("valid")


# ---------------------------------------------------------------- embedded and synthetic


def test_digits_split_is_fixed_and_balanced():
    data = load_data("digits")
    assert data.x_train.shape == (1437, 64) and data.x_test.shape == (360, 64)
    assert data.x_train.dtype == np.float32 and data.y_train.dtype == np.int32
    assert data.task == "classification" and data.num_classes == 10
    assert 0.0 <= data.x_train.min() and data.x_train.max() == 1.0
    counts = np.bincount(data.y_test, minlength=10)
    assert counts.min() >= 34 and counts.max() <= 38  # ~20% of every digit
    again = load_data("digits", seed=5)  # the run seed does not move the split
    np.testing.assert_array_equal(again.x_test, data.x_test)
    other = load_data("digits:seed=1")
    assert not np.array_equal(other.y_test, data.y_test)
    assert "1437 train / 360 test" in data.description


@pytest.mark.parametrize(
    "kind, formula",
    [
        ("cubic", lambda x: 8 * x**3 - 10 * x**2 + 3 * x),
        ("quadratic", lambda x: 0.5 * x**2 + 0.25 * x + 0.1),
    ],
)
def test_polynomials_follow_formula(kind, formula):
    data = load_data(f"{kind}:n=500")
    assert data.x_train.shape == (500, 1) and data.y_train.shape == (500, 1)
    assert data.x_test.shape == (100, 1)  # n_test defaults to n // 5
    assert data.x_train.dtype == data.y_train.dtype == np.float32
    assert data.task == "regression" and data.num_classes is None
    for x, y in [data.split("train"), data.split("test")]:
        assert 0.0 <= x.min() and x.max() < 1.0
        np.testing.assert_array_equal(y, formula(x.astype(np.float64)).astype(np.float32))


def test_synthetic_seeding():
    a, b = load_data("cubic:n=200", seed=3), load_data("cubic:n=200", seed=3)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    np.testing.assert_array_equal(a.x_test, b.x_test)
    assert not np.array_equal(a.x_train, load_data("cubic:n=200", seed=4).x_train)
    assert not np.array_equal(a.x_train[:40], a.x_test)  # separate streams
    np.testing.assert_array_equal(load_data("cubic:n=200,seed=3", seed=9).x_train, a.x_train)
    # The test stream does not depend on n.
    np.testing.assert_array_equal(load_data("cubic:n=50,n_test=40", seed=3).x_test, a.x_test)


def test_teacher_targets_come_from_the_teacher():
    data = load_data("teacher:d=6,h=3,out=2,n=300,n_test=50,seed=7")
    assert data.x_train.shape == (300, 6) and data.y_train.shape == (300, 2)
    assert data.x_test.shape == (50, 6) and data.y_test.dtype == np.float32
    teacher = Teacher.from_seed(d=6, h=3, out=2, seed=7)
    for x, y in [data.split("train"), data.split("test")]:
        np.testing.assert_allclose(y, teacher(x.astype(np.float64)), rtol=1e-6, atol=1e-6)
    assert np.std(data.y_train) > 0.1  # the teacher is not dead on Gaussian inputs


def test_teacher_noise_and_defaults():
    clean = load_data("teacher", seed=1)
    assert clean.x_train.shape == (2000, 10) and clean.x_test.shape == (500, 10)
    noisy = load_data("teacher:noise=0.5", seed=1)
    np.testing.assert_array_equal(noisy.x_train, clean.x_train)
    residual = noisy.y_train - clean.y_train
    assert abs(residual.std() - 0.5) < 0.05
    assert not np.array_equal(load_data("teacher", seed=2).y_train, clean.y_train)


def test_limit_keeps_a_fixed_random_subset_in_order():
    full, limited = load_data("cubic:n=100"), load_data("cubic:n=100,limit=7")
    rows = [int(np.flatnonzero(full.x_train[:, 0] == v)[0]) for v in limited.x_train[:, 0]]
    assert len(rows) == 7 and rows == sorted(rows)  # a subset, in the original order
    np.testing.assert_array_equal(full.y_train[rows], limited.y_train)
    assert rows != list(range(7))  # not just the first rows
    again = load_data("cubic:n=100,limit=7", seed=0)
    np.testing.assert_array_equal(again.x_test, limited.x_test)
    assert "7 train / 7 test" in limited.description


def test_limit_on_class_sorted_data_keeps_every_class(tmp_path):
    y = np.repeat(np.arange(10), 100).astype(np.int64)  # sorted by class, like many files
    x = np.arange(1000, dtype=np.float32).reshape(-1, 1)
    np.savez(tmp_path / "sorted.npz", x_train=x, y_train=y, x_test=x, y_test=y)
    limited = load_data(f"npz:{tmp_path / 'sorted.npz'}:limit=200")
    assert set(limited.y_train.tolist()) == set(range(10))


# ---------------------------------------------------------------- npz


def test_npz_keras_convention(tmp_path, rng):
    path = tmp_path / "images.npz"
    x_train = rng.integers(0, 256, (20, 4, 4), dtype=np.uint8)
    x_test = rng.integers(0, 256, (6, 4, 4), dtype=np.uint8)
    np.savez(
        path,
        x_train=x_train,
        y_train=np.arange(20, dtype=np.uint8).reshape(20, 1) % 3,
        x_test=x_test,
        y_test=np.array([0, 1, 2, 0, 1, 4], dtype=np.int64),
        class_names=np.array(["a", "b", "c", "d", "e"]),
    )
    data = load_data(f"npz:{path}")
    assert data.task == "classification" and data.num_classes == 5
    assert data.x_train.dtype == np.float32 and data.y_train.shape == (20,)
    assert data.y_train.dtype == np.int32
    np.testing.assert_allclose(data.x_test, x_test / 255.0, rtol=1e-6)
    assert data.x_train.max() <= 1.0


def test_npz_x_y_is_train_only_regression(tmp_path, rng):
    path = tmp_path / "reg.npz"
    x, y = rng.normal(size=(30, 3)), rng.normal(size=30)
    np.savez(path, x=x, y=y)
    data = load_data(f"npz:{path}:limit=10")
    assert data.task == "regression" and data.num_classes is None
    assert data.y_train.shape == (10, 1) and data.y_train.dtype == np.float32
    rows = np.sort(np.random.default_rng(0).choice(30, size=10, replace=False))  # limit's subset
    np.testing.assert_allclose(data.y_train[:, 0], y[rows], rtol=1e-6)
    assert not data.has_split("test")


def test_npz_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_data(f"npz:{tmp_path / 'missing.npz'}")
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, images=np.zeros((2, 2)), labels=np.zeros(2))
    with pytest.raises(UserError, match=r"\['images', 'labels'\].*x_train and y_train"):
        load_data(f"npz:{wrong}")
    half = tmp_path / "half.npz"
    np.savez(half, x_train=np.zeros((2, 2)), y_train=np.zeros(2), x_test=np.zeros((2, 2)))
    with pytest.raises(UserError, match="x_test without its partner"):
        load_data(f"npz:{half}")
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(b"this is not an archive")
    with pytest.raises(UserError, match="not an .npz archive"):
        load_data(f"npz:{corrupt}")
    single = tmp_path / "single.npy"
    np.save(single, np.zeros(3))
    with pytest.raises(UserError, match="single .npy array"):
        load_data(f"npz:{single}")
    mismatched = tmp_path / "mismatched.npz"
    np.savez(mismatched, x=np.zeros((5, 2)), y=np.zeros(4, dtype=int))
    with pytest.raises(UserError, match="one target per sample"):
        load_data(f"npz:{mismatched}")
    negative = tmp_path / "negative.npz"
    np.savez(negative, x=np.zeros((2, 2)), y=np.array([0, -1]))
    with pytest.raises(UserError, match=">= 0"):
        load_data(f"npz:{negative}")


# ---------------------------------------------------------------- idx


def write_idx(path, array, compress=False):
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    raw = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw) if compress else raw)


def test_idx_round_trip(tmp_path, rng):
    images = rng.integers(0, 256, (12, 5, 5), dtype=np.uint8)
    labels = rng.integers(0, 10, 12, dtype=np.uint8)
    write_idx(tmp_path / "train-images-idx3-ubyte", images)
    write_idx(tmp_path / "train-labels-idx1-ubyte", labels)
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", images[:4], compress=True)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", labels[:4], compress=True)
    data = load_data(f"idx:{tmp_path}")
    assert data.x_train.shape == (12, 5, 5) and data.x_test.shape == (4, 5, 5)
    np.testing.assert_allclose(data.x_train, images / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(data.y_train, labels)
    np.testing.assert_array_equal(data.y_test, labels[:4])
    assert data.num_classes == labels.max() + 1 and data.y_train.dtype == np.int32


def test_idx_errors(tmp_path):
    with pytest.raises(UserError, match="train-images-idx3-ubyte"):
        load_data(f"idx:{tmp_path}")
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(3))
    (tmp_path / "train-images-idx3-ubyte").write_bytes(b"\x01\x02\x03\x04junk")
    with pytest.raises(UserError, match="not an IDX file.*01020304"):
        load_data(f"idx:{tmp_path}")
    header = bytes([0, 0, 8, 3]) + struct.pack(">3I", 3, 2, 2)
    (tmp_path / "train-images-idx3-ubyte").write_bytes(header + b"\x00" * 5)
    with pytest.raises(UserError, match=r"shape \(3, 2, 2\).*5 data bytes"):
        load_data(f"idx:{tmp_path}")


# ---------------------------------------------------------------- text

TRAIN = "the cat sat\nthe dog sat on the mat\n"
TEST = "the cat ran\n"


def check_windows(data, steps):
    assert data.x_train.shape[1:] == (steps,) and data.x_train.dtype == np.int32
    for x, y in [data.split("train"), data.split("test")]:
        flat_x, flat_y = x.reshape(-1), y.reshape(-1)
        np.testing.assert_array_equal(flat_y[:-1], flat_x[1:])  # y is x shifted by one


def test_text_directory_vocabulary_and_windows(tmp_path):
    (tmp_path / "toy.train.txt").write_text(TRAIN)
    (tmp_path / "toy.valid.txt").write_text("mat\n")
    (tmp_path / "toy.test.txt").write_text(TEST)
    data = load_data(f"text:{tmp_path}:seq=3")
    assert data.task == "sequence"
    # By count ('the' 3, then '<eos>' and 'sat' 2, ties by word), then the single words;
    # the test file's unseen 'ran' adds <unk> (no cap is hit at the default vocab=10000).
    words = ["the", "<eos>", "sat", "cat", "dog", "mat", "on", "<unk>"]
    assert data.num_classes == len(words)
    ids = {w: i for i, w in enumerate(words)}
    train_ids = [ids[w] for w in "the cat sat <eos> the dog sat on the mat <eos>".split()]
    assert data.x_train.shape == (3, 3)  # 11 tokens -> (11 - 1) // 3 windows
    np.testing.assert_array_equal(data.x_train.reshape(-1), train_ids[:9])
    np.testing.assert_array_equal(data.y_train.reshape(-1), train_ids[1:10])
    test_ids = [ids[w] for w in ["the", "cat", "<unk>", "<eos>"]]
    np.testing.assert_array_equal(data.x_test.reshape(-1), test_ids[:3])
    check_windows(data, 3)


def test_text_zip_with_vocab_cap_and_valid_split(tmp_path):
    path = tmp_path / "corpus.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("simple/data/ptb.train.txt", TRAIN)
        archive.writestr("simple/data/ptb.char.train.txt", "t h e\n")  # must be ignored
        archive.writestr("simple/data/ptb.valid.txt", "the mat sat on the cat\n")
    data = load_data(f"text:{path}:vocab=4,seq=2,split_test=valid")
    assert data.num_classes == 4  # the, <eos>, sat, <unk>
    unk = 3
    valid = [0, unk, 2, unk, 0, unk, 1]
    np.testing.assert_array_equal(data.x_test.reshape(-1), valid[:6])
    check_windows(data, 2)
    assert data.x_train.max() == unk


def test_text_errors(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(UserError, match="no file ending in train.txt"):
        load_data(f"text:{tmp_path}")
    with pytest.raises(UserError, match="neither a directory nor a zip"):
        load_data(f"text:{tmp_path / 'notes.txt'}")
    (tmp_path / "a.train.txt").write_text("a b\n")
    with pytest.raises(UserError, match="too few for one window"):
        load_data(f"text:{tmp_path}:seq=20")
    with pytest.raises(UserError, match="no file ending in valid.txt"):
        load_data(f"text:{tmp_path}:split_test=valid")


# ---------------------------------------------------------------- tfds


def test_tfds_with_mock_data(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=6):
        data = load_data("tfds:mnist")
        only = load_data("tfds:mnist:test:limit=4")
    assert data.x_train.shape == (6, 28, 28, 1) and data.x_test.shape == (6, 28, 28, 1)
    assert data.x_train.dtype == np.float32 and 0.0 <= data.x_train.min()
    assert data.x_train.max() <= 1.0 and data.y_train.dtype == np.int32
    assert data.task == "classification" and data.num_classes == 10
    assert only.x_train.shape == (4, 28, 28, 1) and not only.has_split("test")


def test_tfds_not_prepared_is_a_user_error(tmp_path):
    pytest.importorskip("tensorflow_datasets")
    with pytest.raises(UserError, match="not prepared locally.*download=1.*npz:PATH"):
        load_data(f"tfds:mnist:data_dir={tmp_path}")
    with pytest.raises(UserError, match="no dataset named 'no_such_dataset'"):
        load_data(f"tfds:no_such_dataset:data_dir={tmp_path}")


# ---------------------------------------------------------------- adapt_to_model


@pytest.fixture(scope="module")
def digits():
    return load_data("digits")


def test_adapt_reshapes_inputs_and_keeps_sparse_labels(digits):
    adapted = adapt_to_model(digits, (8, 8, 1), (10,), "sparse_categorical_crossentropy")
    assert adapted.x_train.shape == (1437, 8, 8, 1) and adapted.x_test.shape == (360, 8, 8, 1)
    np.testing.assert_array_equal(adapted.y_train, digits.y_train)
    assert digits.x_train.shape == (1437, 64)  # the original is untouched
    assert adapt_to_model(digits, (None,), (None,)).x_train.shape == (1437, 64)


@pytest.mark.parametrize(
    "loss",
    [
        "categorical_crossentropy",
        "CategoricalCrossentropy",
        "categorical_focal_crossentropy",
        "mse",
    ],
)
def test_adapt_one_hot_for_dense_losses(digits, loss):
    adapted = adapt_to_model(digits, (64,), (12,), loss)
    assert adapted.y_train.shape == (1437, 12) and adapted.y_train.dtype == np.float32
    np.testing.assert_array_equal(adapted.y_train.argmax(1), digits.y_train)
    assert adapted.y_train.sum() == 1437


def test_adapt_binary_single_output():
    data = Dataset(
        "toy",
        np.zeros((4, 2), np.float32),
        np.array([0, 1, 1, 0], np.int32),
        None,
        None,
        "classification",
        2,
        "toy",
    )
    adapted = adapt_to_model(data, (2,), (1,), "binary_crossentropy")
    assert adapted.y_train.shape == (4, 1) and adapted.y_train.dtype == np.float32
    np.testing.assert_array_equal(adapted.y_train[:, 0], [0, 1, 1, 0])


@pytest.mark.parametrize(
    "input_shape, output_shape, message",
    [
        ((63,), (10,), r"'digits'.*shape \(64,\).*expects \(63,\)"),
        ((None, 8), (10,), r"shape \(64,\).*expects \(None, 8\)"),
        ((64,), (5,), "10 classes, but the model outputs only 5"),
        ((64,), (1,), "10 classes, but the model has a single output"),
        ((64,), (10, 2), "a classifier outputs"),
    ],
)
def test_adapt_rejects_mismatches(digits, input_shape, output_shape, message):
    with pytest.raises(UserError, match=message):
        adapt_to_model(digits, input_shape, output_shape)


def test_adapt_regression_targets():
    data = load_data("teacher:d=4,out=2,n=8,n_test=2")
    assert adapt_to_model(data, (4,), (2,)).y_train.shape == (8, 2)
    with pytest.raises(UserError, match=r"targets of per-sample shape \(2,\).*expects \(3,\)"):
        adapt_to_model(data, (4,), (3,))


def test_adapt_sequence_targets(tmp_path):
    (tmp_path / "t.train.txt").write_text(TRAIN * 3)
    data = load_data(f"text:{tmp_path}:seq=4")
    vocab = data.num_classes
    adapted = adapt_to_model(data, (None,), (4, vocab + 2))
    np.testing.assert_array_equal(adapted.y_train, data.y_train)
    one_hot = adapt_to_model(data, (4,), (None, vocab), "categorical_crossentropy")
    assert one_hot.y_train.shape == data.y_train.shape + (vocab,)
    with pytest.raises(UserError, match=f"vocabulary of {vocab} tokens"):
        adapt_to_model(data, (4,), (4, vocab - 1))
    with pytest.raises(UserError, match=r"\(steps, vocabulary\)"):
        adapt_to_model(data, (4,), (vocab,))
