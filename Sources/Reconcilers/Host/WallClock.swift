#if canImport(Glibc)
internal import Glibc
#elseif canImport(Darwin)
internal import Darwin
#endif
internal import Synchronization

/// A point in wall-clock time: milliseconds since 1970-01-01 UTC. Schedules (cron, backoff,
/// "last success" metrics) need real time of day, which `ContinuousClock` does not give.
public struct Timestamp: Sendable, Hashable, Comparable, CustomStringConvertible {
    public var millisecondsSinceEpoch: Int64

    public init(millisecondsSinceEpoch: Int64) {
        self.millisecondsSinceEpoch = millisecondsSinceEpoch
    }

    public static func < (a: Timestamp, b: Timestamp) -> Bool { a.millisecondsSinceEpoch < b.millisecondsSinceEpoch }

    public func adding(_ span: TimeSpan) -> Timestamp {
        Timestamp(millisecondsSinceEpoch: millisecondsSinceEpoch + span.milliseconds)
    }

    public var description: String { "\(millisecondsSinceEpoch / 1000).\(String(1000 + millisecondsSinceEpoch % 1000).dropFirst())s" }
}

/// Tells the time and waits. Injected, so schedules and backoff are tested without sleeping.
public protocol WallClock: Sendable {
    func now() -> Timestamp
    /// Returns once the clock has reached `deadline`; throws `CancellationError` if cancelled.
    func sleep(until deadline: Timestamp) async throws
    /// A time that only moves forward, for timeouts (a wall clock that NTP steps would end a
    /// wait early, or stretch it): the deadlines of waits are taken on it.
    func monotonicNow() -> Timestamp
    /// Waits `span` on the monotonic time.
    func sleep(for span: TimeSpan) async throws
}

extension WallClock {
    /// A clock that is not stepped (a test's) is its own monotonic time.
    public func monotonicNow() -> Timestamp { now() }
    public func sleep(for span: TimeSpan) async throws { try await sleep(until: now().adding(span)) }
}

/// The system's real-time clock.
public struct SystemWallClock: WallClock {
    public init() {}

    public func monotonicNow() -> Timestamp {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Timestamp(millisecondsSinceEpoch: Int64(ts.tv_sec) * 1000 + Int64(ts.tv_nsec) / 1_000_000)
    }

    public func sleep(for span: TimeSpan) async throws {
        if span.milliseconds > 0 { try await Task.sleep(for: .milliseconds(span.milliseconds)) }
    }

    public func now() -> Timestamp {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return Timestamp(millisecondsSinceEpoch: Int64(ts.tv_sec) * 1000 + Int64(ts.tv_nsec) / 1_000_000)
    }

    public func sleep(until deadline: Timestamp) async throws {
        let wait = deadline.millisecondsSinceEpoch - now().millisecondsSinceEpoch
        if wait > 0 { try await Task.sleep(for: .milliseconds(wait)) }
    }
}

/// A clock that moves only when told to (`advance(by:)`), waking the sleepers whose deadline
/// it passes. For tests of anything scheduled.
public final class ManualWallClock: WallClock {
    private struct State {
        var now: Timestamp
        var sleepers: [(id: Int, deadline: Timestamp, continuation: CheckedContinuation<Void, any Error>)] = []
        var nextID = 0
    }

    private let state: Mutex<State>

    public init(now: Timestamp) {
        state = Mutex(State(now: now))
    }

    public func now() -> Timestamp { state.withLock { $0.now } }

    /// How many tasks are waiting in `sleep(until:)`.
    public var sleeperCount: Int { state.withLock { $0.sleepers.count } }

    public func advance(by span: TimeSpan) {
        let due = state.withLock { s -> [CheckedContinuation<Void, any Error>] in
            s.now = s.now.adding(span)
            let now = s.now
            let ready = s.sleepers.filter { $0.deadline <= now }
            s.sleepers.removeAll { $0.deadline <= now }
            return ready.map(\.continuation)
        }
        for c in due { c.resume() }
    }

    public func sleep(until deadline: Timestamp) async throws {
        let id = state.withLock { s -> Int in
            s.nextID += 1
            return s.nextID
        }
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                let resumeNow = state.withLock { s -> Bool in
                    if s.now >= deadline || Task.isCancelled { return true }
                    s.sleepers.append((id, deadline, continuation))
                    return false
                }
                if resumeNow {
                    if Task.isCancelled { continuation.resume(throwing: CancellationError()) } else { continuation.resume() }
                }
            }
        } onCancel: {
            let cancelled = state.withLock { s -> CheckedContinuation<Void, any Error>? in
                guard let i = s.sleepers.firstIndex(where: { $0.id == id }) else { return nil }
                return s.sleepers.remove(at: i).continuation
            }
            cancelled?.resume(throwing: CancellationError())
        }
    }
}
