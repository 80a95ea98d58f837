"""The neural models: real architecture configs, loading from local directories, tiny random-weight builds."""
