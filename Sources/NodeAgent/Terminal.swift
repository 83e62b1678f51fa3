#if canImport(Glibc)
import Glibc
#endif

/// Writes to stderr, where errors and progress go so that stdout stays data.
enum Terminal {
    static func error(_ line: String) {
        let bytes = Array((line + "\n").utf8)
        var offset = 0
        while offset < bytes.count {
            let n = bytes[offset...].withUnsafeBytes { write(2, $0.baseAddress, $0.count) }
            if n <= 0 { return }
            offset += n
        }
    }
}

/// Paths given on the command line, relative to where the command runs.
enum WorkingDirectory {
    static var current: String {
        var buffer = [CChar](repeating: 0, count: 4096)
        return getcwd(&buffer, buffer.count) != nil ? String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self) : "."
    }

    static func absolute(_ path: String) -> String { path.hasPrefix("/") ? path : current + "/" + path }
}
