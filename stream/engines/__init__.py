"""Where pipelines run: decoder threads, the mailbox and one inference worker in this process
(``local``), or the same pipeline in Ray actors (``ray``), and the settings both share."""
