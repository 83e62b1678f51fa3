#if canImport(Glibc)
internal import Glibc
#endif
internal import Synchronization

/// One dedicated OS thread that runs jobs in order. Blocking libcurl calls run here, never on
/// Swift's cooperative thread pool; one thread per connection keeps its handle single-owner.
final class Worker: Sendable {
    private struct State {
        var jobs: [@Sendable () -> Void] = []
        var stopping = false
    }

    private let state = Mutex(State())
    private let signal = Semaphore()

    init() {
        let box = Unmanaged.passRetained(self)
        var thread = pthread_t()
        let rc = pthread_create(&thread, nil, { raw in
            let worker = Unmanaged<Worker>.fromOpaque(raw!).takeRetainedValue()
            worker.loop()
            return nil
        }, box.toOpaque())
        precondition(rc == 0, "pthread_create failed: \(rc)")
        pthread_detach(thread)
    }

    /// Queues a job; jobs run one at a time, in order.
    func submit(_ job: @escaping @Sendable () -> Void) {
        state.withLock { $0.jobs.append(job) }
        signal.post()
    }

    /// Lets the thread end after the queued jobs.
    func stop() {
        state.withLock { $0.stopping = true }
        signal.post()
    }

    private func loop() {
        while true {
            signal.wait()
            let next = state.withLock { s -> (@Sendable () -> Void)? in
                s.jobs.isEmpty ? nil : s.jobs.removeFirst()
            }
            if let next {
                next()
            } else if state.withLock({ $0.stopping }) {
                return
            }
        }
    }
}

/// A counting semaphore over pthread primitives (no Foundation, no Dispatch).
final class Semaphore: @unchecked Sendable {
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let condition = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    private var count = 0   // guarded by mutex

    init() {
        pthread_mutex_init(mutex, nil)
        pthread_cond_init(condition, nil)
    }

    deinit {
        pthread_cond_destroy(condition)
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
        condition.deallocate()
    }

    func post() {
        pthread_mutex_lock(mutex)
        count += 1
        pthread_cond_signal(condition)
        pthread_mutex_unlock(mutex)
    }

    func wait() {
        pthread_mutex_lock(mutex)
        while count == 0 { pthread_cond_wait(condition, mutex) }
        count -= 1
        pthread_mutex_unlock(mutex)
    }
}
