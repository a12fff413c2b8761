"""Issue 13's hostile suite: a hostile upstream, browsers, floods and echoed keys against a real mitmdump (README.md here)."""
