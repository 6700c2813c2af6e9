//! Decoding ahead of the model: the source runs in its own thread, a few frames ahead, so
//! decoding overlaps inference instead of adding to it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, sync_channel};

use super::{Frame, FrameSource, VideoInfo};
use crate::error::Result;

pub struct Prefetch {
    info: VideoInfo,
    frames: Receiver<Result<Frame>>,
    damaged: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl Prefetch {
    /// Runs `source` in a thread, at most `depth` frames ahead.
    pub fn new(mut source: Box<dyn FrameSource>, depth: usize) -> Self {
        let info = source.info().clone();
        let (tx, frames) = sync_channel(depth.max(1));
        let damaged = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (d, s) = (damaged.clone(), stop.clone());
        // Not joined: a thread waiting on a stalled stream must not hold up the end of a run;
        // it ends at its next frame (its send fails) and its reader stops the decoder.
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                let next = source.next_frame();
                d.store(source.damaged(), Ordering::Relaxed);
                let end = !matches!(next, Ok(Some(_)));
                if let Some(item) = next.transpose()
                    && tx.send(item).is_err()
                {
                    break; // the consumer is gone
                }
                if end {
                    break;
                }
            }
        });
        Prefetch { info, frames, damaged, stop }
    }
}

impl FrameSource for Prefetch {
    fn info(&self) -> &VideoInfo {
        &self.info
    }

    fn next_frame(&mut self) -> Result<Option<Frame>> {
        // A closed channel is the end of the source.
        self.frames.recv().ok().transpose()
    }

    fn damaged(&self) -> usize {
        self.damaged.load(Ordering::Relaxed)
    }
}

impl Drop for Prefetch {
    fn drop(&mut self) {
        // The producer stops at its next frame: by this flag, or because its send fails once
        // the receiver is gone.
        self.stop.store(true, Ordering::Relaxed);
    }
}
