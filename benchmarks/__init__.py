"""The book's benchmarks: run by ``make benchmarks``, never by the timed test suite (see README.md here)."""
