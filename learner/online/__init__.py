"""The online learner: live feedback in, gated versions out (`trimtab learn --online`)."""
