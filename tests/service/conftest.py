"""The service tests use the deployment fixtures of tests/conftest.py (`service`, `team`,
`other_team`, `team_files`), shared with tests/reliability/."""
