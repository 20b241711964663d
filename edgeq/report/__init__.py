"""Reports of a validation or build that someone who did not run it can read: one offline HTML file plus the JSON."""
