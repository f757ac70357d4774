"""`gateway`, the operators' command line: dossier timelines, dead letters, monthly reports,
maintenance mode, catalogue reloads and health, over the services' own HTTP APIs. It imports
only core/ and gen/: an operator's machine needs no service code."""
