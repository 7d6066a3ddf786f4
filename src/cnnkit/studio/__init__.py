"""``cnnkit studio``: make, train, try and ship a classifier from a web page.

A project is a plain folder with one sub-folder per class (``cnnkit train PROJECT``
works on it too); the studio keeps its runs and records in ``PROJECT/.cnnkit/``, which
training ignores as it ignores every hidden folder. The web server (:mod:`.app`) edits
the project and answers the page; training, planning and exporting run in worker
processes of their own (:mod:`.worker`), whose events stream to the page.
"""
