import Foundation
import Reconcilers
#if canImport(Glibc)
import Glibc
#endif

/// A throwaway PKI (Tests/Fixtures/pki/make.py) and `openssl s_server` demanding a client
/// certificate from it: a real TLS peer for the HTTPS client's tests.
public final class TLSTestPeer: @unchecked Sendable {
    public let directory: String
    public let port: Int
    private var pid: Int32?

    public init() async throws {
        directory = Fixtures.temporaryDirectory()
        try await SystemCommandRunner().check(Command("python3", [Fixtures.repository + "/Tests/Fixtures/pki/make.py", directory]))
        port = Self.freePort()
        pid = try DetachedProcess.spawn([
            "/usr/bin/openssl", "s_server", "-accept", "127.0.0.1:\(port)", "-cert", directory + "/server.pem",
            "-key", directory + "/server.key", "-CAfile", directory + "/ca.pem", "-Verify", "1", "-verify_return_error", "-www", "-quiet",
        ])
        for _ in 0..<100 {
            if Self.canConnect(port) { return }
            try await Task.sleep(for: .milliseconds(50))
        }
        stop()
        throw CommandError(code: .failed, command: "openssl s_server", message: "did not start listening on \(port)")
    }

    public func pem(_ name: String) -> [UInt8] {
        Array((try? Data(contentsOf: URL(fileURLWithPath: "\(directory)/\(name)"))) ?? Data())
    }

    public func stop() {
        if let pid { DetachedProcess.stop(pid) }
        pid = nil
        try? FileManager.default.removeItem(atPath: directory)
    }

    /// A TCP port on loopback that nothing listens on now (the kernel's pick for port 0).
    public static func freePort() -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) == 0 ? getsockname(fd, $0, &length) : -1 }
        }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    /// Whether 127.0.0.1:`port` accepts a connection within 500 ms. Never blocks longer: a
    /// listener whose accept queue is full drops the SYN, and a blocking connect would then
    /// hold one of the few threads every async test shares for minutes.
    public static func canConnect(_ port: Int) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let rc = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        if rc == 0 { return true }
        guard errno == EINPROGRESS else { return false }
        var pfd = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
        guard poll(&pfd, 1, 500) == 1 else { return false }
        var error: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        return getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &length) == 0 && error == 0
    }
}
