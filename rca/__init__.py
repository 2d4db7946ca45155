"""Root-cause analysis: span store queries, service graph, suspect ranking, incident reports."""
