"""Label Studio adapter: maps LS regions to engine prompts and engine masks to LS results. No model logic here."""
