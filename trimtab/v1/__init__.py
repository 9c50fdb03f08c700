"""Python code generated from proto/trimtab/v1 by `python -m trimtab.protogen`; never edit by hand."""
