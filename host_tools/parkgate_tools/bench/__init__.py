"""`make bench`: each module measures one target against a baseline taken in the same run
(`python -m parkgate_tools.bench [gate journal boot tariff bridge sync members]`)."""
