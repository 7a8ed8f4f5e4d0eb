"""The reliability tests (issue #26). A package, so that their conftest.py is imported as
`reliability.conftest`: pytest imports a conftest.py outside a package under the plain name
`conftest`, which would take that name from tests/conftest.py (`from conftest import
run_cli` in every test module collected after this folder)."""
