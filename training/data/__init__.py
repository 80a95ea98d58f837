"""Training data: the JSONL manifest (``manifest``), synthesised pairs (``synthesis``, ``build``), importers of
paired folders, IQA tables and annotation files (``importers``), teacher-free critic annotations (``annotate``), the
resumable bucketed loader (``loader``) and ``spc-fast data`` (``cli``)."""
