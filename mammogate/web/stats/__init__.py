"""The statistics page: counts, distributions and the model's performance at this site."""
