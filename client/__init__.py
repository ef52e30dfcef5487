"""The `replayft` client commands (`files`, `jobs`, `sweeps`): for internal teams, over HTTP.

They speak HTTP to any ReplayFT server, so they work against a laptop's `replayft serve` and a
shared deployment alike:

  replayft files upload PATH --purpose fine-tune|replay [--wait [--timeout SECONDS]]
  replayft jobs submit SPEC.yaml [--wait] [--suffix S] [--timeout SECONDS]
  replayft jobs list [--status S] [--limit N]
  replayft jobs show ID
  replayft jobs cancel ID
  replayft jobs logs ID [--follow [--poll]]

Every command takes `--url` (default `$REPLAYFT_URL`, else http://127.0.0.1:8000; a trailing
`/v1`, as OpenAI clients write base URLs, is accepted) and `--api-key` (default
`$REPLAYFT_API_KEY`). The key goes only into the Authorization header: it is never printed, and
error messages are built from the server's answer, never from the request.

`jobs submit` reads the engine's YAML spec, the file `replayft train` takes. Local data files are
uploaded (`training_file`, `validation_file` and `replay.validation_dataset` with purpose
fine-tune, `replay.dataset` with purpose replay); a value that is not a local file is passed through as a file id (`file-...`)
or, for `replay.dataset`, as a registered corpus name. The API takes one file id per
`training_file` / `validation_file`, so several local JSON Lines files of one format are joined
into one upload (the engine reads several files as their documents in order, so the run is the
same); any other combination is refused with the reason. Once the server has validated every
upload, the spec's fields become the job request: `model`, `seed`, `suffix`, `replay` (dataset,
validation_dataset, fraction, target_stage2_allocation, stage2_duration) and `method.supervised.hyperparameters`
(n_epochs, batch_size, learning_rate, lr_scheduler, seq_len, total_steps, optimizer_state, ...,
and the spec's LoRA `method` as `adapter`).
Only the fields the spec sets are sent, so the server's defaults (the engine's) fill the rest. A
field the API cannot carry (weight_decay, gguf_file, ...) is an error when it differs from the
server's default rather than being dropped in silence; `device` and `cache_dir` belong to the
server and are ignored with a note. If the server rejects the job, the files uploaded for it are
deleted again.

Output: results go to stdout (JSON for single objects, a table for lists, `ID STATUS` lines for
submit and cancel), progress and errors to stderr. Exit status: 0 done; 1 the server or the job
failed (unreachable server, 5xx, rejected key, job failed or cancelled); 2 the input was rejected
(a spec error, a data file that failed validation, or a 4xx naming the field, printed as
`error: <param>: <message>`); 130 interrupted.
"""
