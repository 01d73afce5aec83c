"""The batch service: campaigns, submission, clustering into shared-nothing jobs, engines, merge-back, states.

See `skybutler.batch.manifest` for the files that pass between the central side and a job.
"""
