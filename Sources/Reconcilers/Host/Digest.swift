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
