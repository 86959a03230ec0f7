//! The spawner: a thread started before any filter, which installs the
//! control plane's filter (a superset of every list it starts threads
//! under) and then starts the threads filtered threads ask for. A vCPU that
//! activates a virtio device, or the API's accept loop, asks it for the
//! worker or connection thread, which then carries only its own filter (and
//! the spawner's wider one) instead of its parent's.

use std::sync::mpsc::{channel, sync_channel, Sender, SyncSender};
use std::sync::Mutex;
use std::thread::JoinHandle;

use super::ThreadKind;

/// What a thread runs.
type Job = Box<dyn FnOnce() + Send>;

/// A request to the spawner, answered on `reply`.
struct Request {
    name: String,
    kind: ThreadKind,
    job: Job,
    reply: SyncSender<std::io::Result<JoinHandle<()>>>,
}

/// The spawner's queue, once started.
static SPAWNER: Mutex<Option<Sender<Request>>> = Mutex::new(None);

/// Starts the spawner thread.
pub(super) fn start() -> std::io::Result<()> {
    let (tx, rx) = channel::<Request>();
    std::thread::Builder::new()
        .name("spawner".into())
        .spawn(move || {
            super::enter(ThreadKind::Vmm);
            for req in rx {
                let _ = req.reply.send(spawn_here(req.name, req.kind, req.job));
            }
        })?;
    *SPAWNER.lock().unwrap_or_else(|p| p.into_inner()) = Some(tx);
    Ok(())
}

/// Starts `job` on a thread called `name` under the filter of `kind`,
/// installed before `job` runs; started by the spawner when filters are on.
pub fn spawn(
    name: String,
    kind: ThreadKind,
    job: impl FnOnce() + Send + 'static,
) -> std::io::Result<JoinHandle<()>> {
    let spawner = SPAWNER.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let Some(spawner) = spawner else {
        return spawn_here(name, kind, Box::new(job));
    };
    let (reply, answer) = sync_channel(1);
    let gone = || std::io::Error::other("the thread spawner has stopped");
    spawner
        .send(Request {
            name,
            kind,
            job: Box::new(job),
            reply,
        })
        .map_err(|_| gone())?;
    answer.recv().map_err(|_| gone())?
}

fn spawn_here(name: String, kind: ThreadKind, job: Job) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new().name(name).spawn(move || {
        super::enter(kind);
        job()
    })
}
