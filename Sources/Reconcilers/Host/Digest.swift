#if canImport(Glibc)
internal import Glibc
#endif
internal import Crypto

/// SHA-256, as `sha256sum` prints it: checksums of downloads, backups and applied objects.
public enum Digest {
    public static func sha256Hex(_ bytes: [UInt8]) -> String {
        hex(SHA256.hash(data: bytes))
    }

    /// Hashes a stream piece by piece, so a large download is never held in memory.
    public struct Running: Sendable {
        private var hasher = SHA256()

        public init() {}

        public mutating func update(_ bytes: [UInt8]) { hasher.update(data: bytes) }

        public func finalize() -> String { Digest.hex(hasher.finalize()) }
    }

    /// A file's SHA-256, read in 1 MiB pieces (K3s binaries, dumps); nil when it does not exist.
    public static func sha256Hex(file path: String) throws(FileSystemError) -> String? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        if fd < 0 {
            if errno == ENOENT { return nil }
            throw FileSystemError(operation: "open", path: path, errno: errno)
        }
        defer { close(fd) }
        var hash = Running()
        var buffer = [UInt8](repeating: 0, count: 1 << 20)
        while true {
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                throw FileSystemError(operation: "read", path: path, errno: errno)
            }
            if n == 0 { break }
            hash.update(Array(buffer[0..<n]))
        }
        return hash.finalize()
    }

    static func hex(_ digest: some Sequence<UInt8>) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var out: [UInt8] = []
        for b in digest {
            out.append(digits[Int(b >> 4)])
            out.append(digits[Int(b & 0x0F)])
        }
        return String(decoding: out, as: UTF8.self)
    }
}
