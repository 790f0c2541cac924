"""Candidate stages: how a query finds the videos that the exact GLSCL score then re-ranks. One file per stage
behind one contract (`base.CandidateStage`); `choice.candidate_stages` orders them for a video index."""
