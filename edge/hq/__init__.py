"""HQ's side: receive, validate, store and show hits from vehicles."""
