//! The `flynn` CLI (also `kubectl flynn`). Not built yet; see the CLI issue.
