//! The `rtmdet` command line, run as a user would: one test binary with a module per
//! subcommand family.

mod common;

mod bad_inputs;
mod bench_cli;
mod dota_cli;
mod export_cli;
mod predict_cli;
mod track_cli;
mod train_cli;
mod val_eval_cli;
mod video_cli;
