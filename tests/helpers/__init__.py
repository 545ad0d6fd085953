"""What several test modules share; fixtures stay in `conftest.py`."""
