"""The studies' pages: the worklist and its CSV, the study page (detail, viewer, feedback), ad-hoc uploads, the JSON API for both."""
