"""SadTalker (sadtalker.txt): the face render in the official checkpoint layout."""
