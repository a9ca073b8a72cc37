"""Where things go (the bottom layer; imports nothing of ours, no torch):

* :mod:`.paths` — the repository root, the two model folders, ``runs/``, the rule for a user's path;
* :mod:`.atomic` — atomic file writes;
* :mod:`.progress` — progress bars that stay plain lines when the output is a log file;
* :mod:`.claims` — claims on jobs shared by background workers (atomic claim files, pid + host).
"""
