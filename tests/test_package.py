"""The package's public surface: every export resolves to what its name says."""

from __future__ import annotations

import importlib.resources
import subprocess
import sys

import llama_index_vlm


def test_every_public_name_resolves():
    for name in llama_index_vlm.__all__:
        assert getattr(llama_index_vlm, name) is not None, name


def test_ingest_is_the_function_even_after_its_module_is_imported():
    # A submodule named like an export would replace the export on the package once imported
    # (the index imports it), making `from llama_index_vlm import ingest` a module.
    code = (
        "import llama_index_vlm.index\n"
        "from llama_index_vlm import ingest, IngestReport\n"
        "assert callable(ingest) and ingest.__name__ == 'ingest', ingest\n"
        "assert IngestReport.__name__ == 'IngestReport'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_the_package_ships_its_type_marker():
    # PEP 561: type checkers read the package's annotations only when py.typed is installed.
    marker = importlib.resources.files("llama_index_vlm") / "py.typed"
    assert marker.is_file()


def test_every_error_class_is_importable_from_the_package_root():
    import inspect

    from llama_index_vlm import errors

    classes = {
        name
        for name, value in vars(errors).items()
        if inspect.isclass(value) and issubclass(value, errors.VLMError)
    }
    assert classes <= set(llama_index_vlm.__all__), classes - set(llama_index_vlm.__all__)
    assert {name: getattr(llama_index_vlm, name) for name in classes} == {
        name: getattr(errors, name) for name in classes
    }
