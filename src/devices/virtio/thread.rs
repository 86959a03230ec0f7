//! What every device worker thread shares: starting a worker on a named
//! thread with an eventfd that asks it to stop, stopping and joining it (also
//! on drop), and taking the next available descriptor chain off a queue with
//! notifications re-armed. virtio-net, virtio-blk, virtio-vsock and virtio-rng
//! each run their queues on such a thread.

use std::thread::JoinHandle;

use log::warn;
use virtio_queue::{DescriptorChain, Queue, QueueOwnedT, QueueT};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::memory::GuestMemory;

/// A running worker thread.
pub struct WorkerHandle {
    /// The device, for messages ("virtio-net").
    device: &'static str,
    /// Signalled to stop the thread.
    stop: EventFd,
    /// The thread, until joined.
    thread: Option<JoinHandle<()>>,
}

impl WorkerHandle {
    /// Starts `run` on a thread called `name`; `run` gets the eventfd that is
    /// signalled when the worker must stop, and returns once it is.
    pub fn spawn(
        device: &'static str,
        name: String,
        run: impl FnOnce(EventFd) + Send + 'static,
    ) -> std::io::Result<Self> {
        let stop = EventFd::new(EFD_NONBLOCK)?;
        let thread_stop = stop.try_clone()?;
        let thread = std::thread::Builder::new()
            .name(name)
            .spawn(move || run(thread_stop))?;
        Ok(WorkerHandle {
            device,
            stop,
            thread: Some(thread),
        })
    }

    /// Stops the thread and waits for it (it drops what it owned: queues,
    /// taps, images, connections).
    pub fn stop(&mut self) {
        if let Some(thread) = self.thread.take() {
            if let Err(e) = self.stop.write(1) {
                warn!("{}: cannot signal the worker to stop: {e}", self.device);
                return;
            }
            if thread.join().is_err() {
                warn!("{}: the worker thread panicked", self.device);
            }
        }
    }
}

impl Drop for WorkerHandle {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The next chain the guest made available in `queue`; `None` once there is
/// none and notifications are re-armed (looking again for chains that arrived
/// meanwhile). An available index further ahead than the ring size is an error.
pub fn next_chain<'m>(
    queue: &mut Queue,
    mem: &'m GuestMemory,
) -> Result<Option<DescriptorChain<&'m GuestMemory>>, virtio_queue::Error> {
    loop {
        if let Some(chain) = queue.iter(mem)?.next() {
            return Ok(Some(chain));
        }
        if !queue.enable_notification(mem)? {
            return Ok(None);
        }
    }
}
