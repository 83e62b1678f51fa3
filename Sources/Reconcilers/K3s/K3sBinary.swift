#if canImport(Glibc)
internal import Glibc
#elseif canImport(Darwin)
internal import Darwin
#endif
import KubeClient

/// The K3s binary's download (it is about 70 MB): streamed into a file through the FileSystem
/// seam and verified as it arrives.
enum K3sBinary {
    /// The most a download may be: a K3s binary is about 70 MiB.
    static let maxSize: Int64 = 512 << 20

    /// Downloads `url` into `temp` (a node path; mode 0600: not executable until verified) and
    /// checks its SHA-256. On any failure the partial file is removed and nothing else was touched.
    static func fetch(_ url: String, to temp: String, files: any FileSystem, expect sha256: String,
                      log: @escaping @Sendable (String) -> Void) async throws {
        let fd = try files.createForStreaming(temp, mode: 0o600)
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
            try? files.remove(temp)
            let why = error.kind == .status(404)
                ? "\(url) answered 404: no such release asset (is \"\(url.split(separator: "/").dropLast().last ?? "")\" a K3s version?)"
                : error.message
            throw ReconcileError(.failed, reason: "DownloadFailed", "\(why); the running K3s is untouched")
        }
        guard fsync(fd) == 0 else {
            let e = errno
            try? files.remove(temp)
            throw FileSystemError(operation: "fsync", path: temp, errno: e)
        }
        close(fd)
        closed = true
        let actual = hash.finalize()
        guard actual == sha256 else {
            try? files.remove(temp)
            throw ReconcileError(.stalled, reason: "ChecksumMismatch",
                                 "\(url): the download's sha256 is \(actual) but spec.k3s.sha256 is \(sha256); it was deleted and the running K3s is untouched")
        }
        log("downloaded \(url): \(received) bytes, sha256 verified")
    }
}

/// The running hash, shared with the download's write callback (one thread at a time).
final class HashBox: @unchecked Sendable {
    private var running = Digest.Running()
    func update(_ bytes: [UInt8]) { running.update(bytes) }
    func finalize() -> String { running.finalize() }
}
