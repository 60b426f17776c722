"""NCERT/CBSE curriculum: boards, classes, subjects, books, chapters, learning outcomes; hybrid search."""
