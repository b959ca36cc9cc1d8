"""How many leads a sales target needs: new leads and MQLs per campaign, from calibrated probabilities."""
