import Foundation

/// The firewall's revert timers of one test root (shells named `nodeagent-firewall-revert`,
/// a separate session each, so they outlive nodeagent). A test moves past a timer's bound by
/// firing it (SIGUSR1: it reverts at once) instead of sleeping until it would.
public enum RevertTimers {
    /// The live timers whose script names a path under `root`.
    public static func pids(under root: String) -> [Int32] {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        return entries.compactMap(Int32.init).filter { pid in
            guard let data = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline") else { return false }
            let args = data.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
            return args.contains("nodeagent-firewall-revert") && args.contains { $0.contains(root + "/") }
        }
    }

    /// Fires every timer of `root` now and waits (up to 20 s) until each has reverted and exited.
    /// - Returns: how many were fired.
    @discardableResult
    public static func fire(under root: String) async throws -> Int {
        let fired = pids(under: root)
        for pid in fired { kill(pid, SIGUSR1) }
        for _ in 0..<400 { if pids(under: root).isEmpty { break }; try await Task.sleep(for: .milliseconds(50)) }
        guard pids(under: root).isEmpty else { throw TimerError(message: "revert timers under \(root) did not finish after SIGUSR1") }
        return fired.count
    }

    struct TimerError: Error, CustomStringConvertible {
        var message: String
        var description: String { message }
    }
}
