//! What every device worker thread shares: starting a worker on a named
//! thread with an eventfd that asks it to stop, stopping and joining it (also
//! on drop), taking the next available descriptor chain off a queue with
//! notifications re-armed, and the whole event loop of a device served from
//! one queue. virtio-net, virtio-blk, virtio-vsock and virtio-rng each run
//! their queues on such a thread.

use std::io::ErrorKind;
use std::os::fd::AsRawFd;
use std::thread::JoinHandle;

use log::{debug, warn};
use virtio_queue::{DescriptorChain, Queue, QueueOwnedT, QueueT};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::interrupt::VirtioInterrupts;
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
        let kind = super::seccomp::kind_of(device);
        let thread = crate::seccomp::spawn(name, kind, move || run(thread_stop))?;
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

/// A device served from one queue (virtio-blk, virtio-rng): what
/// [`run_one_queue`] needs of it.
pub trait OneQueueWorker {
    /// The device, for messages ("virtio-blk").
    fn device(&self) -> &'static str;
    /// The queue's notification eventfd.
    fn queue_evt(&self) -> &EventFd;
    /// The INTx resample eventfd, if the line has one.
    fn resample_evt(&self) -> Option<&EventFd>;
    /// Interrupts and NEEDS_RESET.
    fn irq(&self) -> &VirtioInterrupts;
    /// Serves whatever the guest queued.
    fn process(&mut self);
}

/// Epoll tokens of [`run_one_queue`].
const TOKEN_STOP: u64 = 0;
const TOKEN_QUEUE: u64 = 1;
const TOKEN_RESAMPLE: u64 = 2;

/// The thread body of a one-queue device: serves the queue at start (requests
/// queued before the thread listened) and at each notification, forwards INTx
/// resamples, and returns once `stop` is signalled. An epoll failure marks the
/// device NEEDS_RESET.
pub fn run_one_queue(worker: &mut impl OneQueueWorker, stop: &EventFd) {
    let epoll = match one_queue_epoll(worker, stop) {
        Ok(epoll) => epoll,
        Err(e) => {
            let device = worker.device();
            return worker
                .irq()
                .mark_broken(&format!("{device} worker: epoll: {e}"));
        }
    };
    worker.process();
    let mut events = vec![EpollEvent::default(); 4];
    loop {
        let n = match epoll.wait(-1, &mut events) {
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => {
                let device = worker.device();
                return worker
                    .irq()
                    .mark_broken(&format!("{device} worker: epoll_wait: {e}"));
            }
        };
        for event in events.iter().take(n) {
            match event.data() {
                TOKEN_STOP => return,
                TOKEN_QUEUE => {
                    let _ = worker.queue_evt().read();
                    worker.process();
                }
                TOKEN_RESAMPLE => {
                    if let Some(evt) = worker.resample_evt() {
                        let _ = evt.read();
                    }
                    worker.irq().resample();
                }
                other => debug!("{} worker: stray epoll token {other}", worker.device()),
            }
        }
    }
}

/// The epoll set of [`run_one_queue`]: stop, the queue's eventfd and resample.
fn one_queue_epoll(worker: &impl OneQueueWorker, stop: &EventFd) -> std::io::Result<Epoll> {
    let epoll = Epoll::new()?;
    let add = |fd: i32, token: u64| {
        epoll.ctl(
            ControlOperation::Add,
            fd,
            EpollEvent::new(EventSet::IN, token),
        )
    };
    add(stop.as_raw_fd(), TOKEN_STOP)?;
    add(worker.queue_evt().as_raw_fd(), TOKEN_QUEUE)?;
    if let Some(evt) = worker.resample_evt() {
        add(evt.as_raw_fd(), TOKEN_RESAMPLE)?;
    }
    Ok(epoll)
}
