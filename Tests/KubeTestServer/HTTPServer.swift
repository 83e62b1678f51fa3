import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// A small HTTP/1.1 server on loopback, a thread per connection, for the test API server.
/// TLS is in front of it (`socat`, see `KubeTestServer`), as a real API server's would be.
public final class HTTPServer: @unchecked Sendable {
    public struct Request: Sendable {
        public var method: String
        /// Path without the query.
        public var path: String
        public var query: [String: String]
        /// Header names lowercased.
        public var headers: [String: String]
        public var body: [UInt8]
    }

    public enum Response: Sendable {
        case full(status: Int, headers: [(String, String)], body: [UInt8])
        /// Chunked; `produce` writes chunks until it returns (or the client goes away).
        case stream(status: Int, headers: [(String, String)], produce: @Sendable (_ write: ([UInt8]) -> Bool) -> Void)
        /// Announces the whole body's length but sends only its first `sent` bytes, then closes:
        /// a transfer cut off mid-way.
        case truncated(status: Int, body: [UInt8], sent: Int)
    }

    public let port: Int
    private let listener: Int32
    private let handler: @Sendable (Request) -> Response
    private let stopped = Mutex(false)
    private let accepted = Mutex(0)

    /// Connections accepted so far.
    public var connections: Int { accepted.withLock { $0 } }

    public init(handler: @escaping @Sendable (Request) -> Response) throws {
        self.handler = handler
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = 0
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0, Glibc.listen(fd, 64) == 0 else { throw POSIXError(.EADDRINUSE) }
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { _ = getsockname(fd, $0, &length) }
        }
        listener = fd
        port = Int(UInt16(bigEndian: address.sin_port))
        Thread.detachNewThread { [self] in
            while true {
                let client = accept(fd, nil, nil)
                if client < 0 {
                    if stopped.withLock({ $0 }) { return }
                    continue
                }
                accepted.withLock { $0 += 1 }
                Thread.detachNewThread { self.serve(client) }
            }
        }
    }

    public func stop() {
        stopped.withLock { $0 = true }
        shutdown(listener, Int32(SHUT_RDWR))
        close(listener)
    }

    private func serve(_ fd: Int32) {
        defer { close(fd) }
        var buffer: [UInt8] = []
        while let request = readRequest(fd, &buffer) {
            switch handler(request) {
            case .full(let status, let headers, let body):
                var head = "HTTP/1.1 \(status) \(Self.reason(status))\r\nContent-Length: \(body.count)\r\n"
                for (k, v) in headers { head += "\(k): \(v)\r\n" }
                guard send(fd, Array((head + "\r\n").utf8) + body) else { return }
            case .stream(let status, let headers, let produce):
                var head = "HTTP/1.1 \(status) \(Self.reason(status))\r\nTransfer-Encoding: chunked\r\n"
                for (k, v) in headers { head += "\(k): \(v)\r\n" }
                guard send(fd, Array((head + "\r\n").utf8)) else { return }
                produce { chunk in
                    chunk.isEmpty || self.send(fd, Array(String(chunk.count, radix: 16).utf8) + [13, 10] + chunk + [13, 10])
                }
                _ = send(fd, Array("0\r\n\r\n".utf8))
                return   // a watch ends its connection
            case .truncated(let status, let body, let sent):
                let head = "HTTP/1.1 \(status) \(Self.reason(status))\r\nContent-Length: \(body.count)\r\n\r\n"
                _ = send(fd, Array(head.utf8) + body.prefix(sent))
                return
            }
        }
    }

    private func send(_ fd: Int32, _ bytes: [UInt8]) -> Bool {
        var offset = 0
        while offset < bytes.count {
            let n = bytes[offset...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n <= 0 { return false }
            offset += n
        }
        return true
    }

    private func readRequest(_ fd: Int32, _ buffer: inout [UInt8]) -> Request? {
        func fill() -> Bool {
            var chunk = [UInt8](repeating: 0, count: 65536)
            let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n <= 0 { return false }
            buffer.append(contentsOf: chunk[0..<n])
            return true
        }
        var headEnd: Int?
        while headEnd == nil {
            if let i = Self.find([13, 10, 13, 10], in: buffer) { headEnd = i } else if !fill() { return nil }
        }
        let head = String(decoding: buffer[0..<headEnd!], as: UTF8.self)
        buffer.removeFirst(headEnd! + 4)
        var lines = head.split(separator: "\r\n").map(String.init)
        let requestLine = lines.removeFirst().split(separator: " ")
        guard requestLine.count >= 2 else { return nil }
        var headers: [String: String] = [:]
        for line in lines {
            guard let colon = line.firstIndex(of: ":") else { continue }
            headers[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
        }
        var body: [UInt8] = []
        if headers["transfer-encoding"]?.lowercased() == "chunked" {
            while true {
                var lineEnd = Self.find([13, 10], in: buffer)
                while lineEnd == nil { guard fill() else { return nil }; lineEnd = Self.find([13, 10], in: buffer) }
                let size = Int(String(decoding: buffer[0..<lineEnd!], as: UTF8.self).split(separator: ";")[0], radix: 16) ?? 0
                buffer.removeFirst(lineEnd! + 2)
                while buffer.count < size + 2 { guard fill() else { return nil } }
                body += buffer[0..<size]
                buffer.removeFirst(size + 2)
                if size == 0 { break }
            }
        } else if let length = headers["content-length"].flatMap(Int.init) {
            while buffer.count < length { guard fill() else { return nil } }
            body = Array(buffer[0..<length])
            buffer.removeFirst(length)
        }
        let target = String(requestLine[1])
        let parts = target.split(separator: "?", maxSplits: 1)
        var query: [String: String] = [:]
        if parts.count == 2 {
            for item in parts[1].split(separator: "&") {
                let kv = item.split(separator: "=", maxSplits: 1).map { String($0).removingPercentEncoding ?? String($0) }
                query[kv[0]] = kv.count > 1 ? kv[1] : ""
            }
        }
        return Request(method: String(requestLine[0]), path: String(parts[0]), query: query, headers: headers, body: body)
    }

    static func find(_ needle: [UInt8], in haystack: [UInt8]) -> Int? {
        guard haystack.count >= needle.count else { return nil }
        for i in 0...(haystack.count - needle.count) where haystack[i] == needle[0] && Array(haystack[i..<(i + needle.count)]) == needle {
            return i
        }
        return nil
    }

    static func reason(_ status: Int) -> String {
        [200: "OK", 201: "Created", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
         409: "Conflict", 410: "Gone", 415: "Unsupported Media Type", 422: "Unprocessable Entity", 429: "Too Many Requests",
         500: "Internal Server Error", 503: "Service Unavailable"][status] ?? "Status"
    }
}
