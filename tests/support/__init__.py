"""Helpers shared by the test tiers: a scriptable webhook receiver and the ConsentProof Node.js verifier."""
