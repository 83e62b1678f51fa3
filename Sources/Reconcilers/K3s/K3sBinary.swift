#if canImport(Glibc)
internal import Glibc
#elseif canImport(Darwin)
internal import Darwin
#endif
import KubeClient

/// The K3s binary's file operations, on real paths and streamed (it is about 70 MB): hash,
/// download-and-verify, install by rename, copy for the rollback snapshot.
enum K3sBinary {
    /// The most a download may be: a K3s binary is about 70 MiB.
    static let maxSize: Int64 = 512 << 20

    /// Downloads `url` into `temp` (mode 0600: not executable until verified) and checks its
    /// SHA-256. On any failure the partial file is removed and nothing else was touched.
    static func fetch(_ url: String, to temp: String, expect sha256: String, log: @escaping @Sendable (String) -> Void) async throws {
        unlink(temp)
        var slash = temp.lastIndex(of: "/")!
        if slash == temp.startIndex { slash = temp.index(after: slash) }
        try RootedFileSystem(root: "/").makeDirectory(String(temp[..<slash]), mode: 0o755)
        let fd = open(temp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw FileSystemError(operation: "create", path: temp, errno: errno) }
        var closed = false
        defer {
            if !closed { close(fd) }
        }
        let hash = HashBox()
        log("downloading \(url)")
        let received: Int64
        do {
            // A K3s binary is about 70 MiB; 512 MiB leaves room for growth, not for a full disk.
            received = try await HTTPDownload.fetch(url, to: fd, maxSize: Self.maxSize, onChunk: { hash.update($0) }, progress: { p in
                log("downloading \(url): \(p.received >> 20) MiB" + (p.total > 0 ? " of \(p.total >> 20) MiB" : ""))
            })
        } catch {
            unlink(temp)
            let why = error.kind == .status(404)
                ? "\(url) answered 404: no such release asset (is \"\(url.split(separator: "/").dropLast().last ?? "")\" a K3s version?)"
                : error.message
            throw ReconcileError(.failed, reason: "DownloadFailed", "\(why); the running K3s is untouched")
        }
        guard fsync(fd) == 0 else {
            let e = errno
            unlink(temp)
            throw FileSystemError(operation: "fsync", path: temp, errno: e)
        }
        close(fd)
        closed = true
        let actual = hash.finalize()
        guard actual == sha256 else {
            unlink(temp)
            throw ReconcileError(.stalled, reason: "ChecksumMismatch",
                                 "\(url): the download's sha256 is \(actual) but spec.k3s.sha256 is \(sha256); it was deleted and the running K3s is untouched")
        }
        log("downloaded \(url): \(received) bytes, sha256 verified")
    }

    /// Makes the verified download executable and puts it in place in one rename.
    static func install(_ temp: String, as target: String) throws(FileSystemError) {
        guard chmod(temp, 0o755) == 0 else { throw FileSystemError(operation: "chmod", path: temp, errno: errno) }
        guard rename(temp, target) == 0 else { throw FileSystemError(operation: "rename", path: target, errno: errno) }
        syncDirectory(of: target)
    }

    /// Copies a file (streamed) atomically: to a temp file beside the target, fsync, rename.
    static func copy(_ from: String, to target: String, mode: UInt32) throws(FileSystemError) {
        let input = open(from, O_RDONLY | O_CLOEXEC)
        guard input >= 0 else { throw FileSystemError(operation: "open", path: from, errno: errno) }
        defer { close(input) }
        let temp = target + ".nodeagent-tmp"
        unlink(temp)
        let output = open(temp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode_t(mode))
        guard output >= 0 else { throw FileSystemError(operation: "create", path: temp, errno: errno) }
        /// Gives up: the partial copy goes, the target is untouched.
        func fail(_ operation: String, _ path: String) -> FileSystemError {
            let e = errno
            close(output)
            unlink(temp)
            return FileSystemError(operation: operation, path: path, errno: e)
        }
        var buffer = [UInt8](repeating: 0, count: 1 << 20)
        while true {
            let n = buffer.withUnsafeMutableBytes { read(input, $0.baseAddress, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                throw fail("read", from)
            }
            if n == 0 { break }
            var offset = 0
            while offset < n {
                let w = buffer[offset..<n].withUnsafeBytes { write(output, $0.baseAddress, $0.count) }
                if w < 0 {
                    if errno == EINTR { continue }
                    throw fail("write", temp)
                }
                offset += w
            }
        }
        guard fsync(output) == 0 else { throw fail("fsync", temp) }
        guard close(output) == 0 else {
            let e = errno
            unlink(temp)
            throw FileSystemError(operation: "close", path: temp, errno: e)
        }
        guard rename(temp, target) == 0 else {
            let e = errno
            unlink(temp)
            throw FileSystemError(operation: "rename", path: target, errno: e)
        }
        syncDirectory(of: target)
    }

    static func syncDirectory(of path: String) {
        guard let slash = path.lastIndex(of: "/") else { return }
        let directory = slash == path.startIndex ? "/" : String(path[..<slash])
        let fd = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if fd >= 0 {
            fsync(fd)
            close(fd)
        }
    }
}

/// The running hash, shared with the download's write callback (one thread at a time).
final class HashBox: @unchecked Sendable {
    private var running = Digest.Running()
    func update(_ bytes: [UInt8]) { running.update(bytes) }
    func finalize() -> String { running.finalize() }
}
