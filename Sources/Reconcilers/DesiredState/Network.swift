#if canImport(Glibc)
internal import Glibc
#elseif canImport(Darwin)
internal import Darwin
#endif
public import YAML

/// A TCP or UDP port, 1–65535.
public struct Port: YAMLDecodable, Sendable, Hashable, Comparable, CustomStringConvertible {
    public var value: UInt16

    public init?(_ value: Int) {
        guard (1...65535).contains(value) else { return nil }
        self.value = UInt16(value)
    }

    public init(yaml node: YAMLNode, path: FieldPath, context: DecodeContext) throws {
        let raw = try Int(yaml: node, path: path, context: context)
        guard let port = Port(raw) else {
            throw context.fail(.invalidValue, "port \(raw) is out of range 1-65535", at: node.mark, path: path)
        }
        self = port
    }

    public static func < (a: Port, b: Port) -> Bool { a.value < b.value }
    public var description: String { String(value) }
}

/// An IPv4 or IPv6 address, parsed and printed by the C library (`inet_pton`/`inet_ntop`).
public struct IPAddress: YAMLScalarParsable, Sendable, Hashable, CustomStringConvertible {
    /// 4 bytes for IPv4, 16 for IPv6, network order.
    public var bytes: [UInt8]
    public var isIPv4: Bool { bytes.count == 4 }

    /// The IPv4 address inside an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`), if it is one.
    public var mappedIPv4: IPAddress? {
        guard bytes.count == 16, bytes[0..<10].allSatisfy({ $0 == 0 }), bytes[10] == 0xFF, bytes[11] == 0xFF else { return nil }
        var v4 = self
        v4.bytes = Array(bytes[12...])
        return v4
    }

    /// Every "any address" form: `0.0.0.0`, `::`, and `::ffff:0.0.0.0`, which binds IPv4's any too.
    public var isUnspecified: Bool { bytes.allSatisfy { $0 == 0 } || mappedIPv4?.isUnspecified == true }

    public var isLoopback: Bool {
        if let v4 = mappedIPv4 { return v4.isLoopback }
        return isIPv4 ? bytes[0] == 127 : bytes == [UInt8](repeating: 0, count: 15) + [1]
    }

    public init(parsing text: String) throws(InvalidValue) {
        if text.contains(":") {
            var a = in6_addr()
            guard inet_pton(AF_INET6, text, &a) == 1 else { throw InvalidValue("\"\(text)\" is not an IP address") }
            bytes = withUnsafeBytes(of: &a) { Array($0) }
        } else {
            var a = in_addr()
            guard inet_pton(AF_INET, text, &a) == 1 else { throw InvalidValue("\"\(text)\" is not an IP address") }
            bytes = withUnsafeBytes(of: &a) { Array($0) }
        }
    }

    public var description: String {
        var buffer = [CChar](repeating: 0, count: 64)
        let family = isIPv4 ? AF_INET : AF_INET6
        _ = bytes.withUnsafeBytes { inet_ntop(family, $0.baseAddress, &buffer, socklen_t(buffer.count)) }
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// Whether the first `prefix` bits equal those of `other` (same family only).
    func sharesPrefix(_ prefix: Int, with other: IPAddress) -> Bool {
        guard bytes.count == other.bytes.count else { return false }
        var bits = prefix
        for (a, b) in zip(bytes, other.bytes) where bits > 0 {
            let n = min(8, bits)
            let mask = UInt8(truncatingIfNeeded: 0xFF << (8 - n))
            if a & mask != b & mask { return false }
            bits -= n
        }
        return true
    }
}

/// Parses `ADDRESS/PREFIX` into its two parts; a bare address gets the full-length prefix.
private func splitCIDR(_ text: String, requirePrefix: Bool) throws(InvalidValue) -> (IPAddress, Int) {
    let parts = text.split(separator: "/", omittingEmptySubsequences: false)
    guard parts.count <= 2 else { throw InvalidValue("\"\(text)\" is not a CIDR (ADDRESS/PREFIX)") }
    let address = try IPAddress(parsing: String(parts[0]))
    let maxPrefix = address.isIPv4 ? 32 : 128
    guard parts.count == 2 else {
        if requirePrefix { throw InvalidValue("\"\(text)\" needs a prefix length, such as \(text)/\(maxPrefix == 32 ? 24 : 64)") }
        return (address, maxPrefix)
    }
    guard let prefix = Int(parts[1]), (0...maxPrefix).contains(prefix) else {
        throw InvalidValue("\"\(text)\": prefix length must be 0-\(maxPrefix)")
    }
    return (address, prefix)
}

/// A network such as `10.8.0.2/32` or `fd00::/64`: host bits must be zero. A bare address means
/// a single host.
public struct IPNetwork: YAMLScalarParsable, Sendable, Hashable, CustomStringConvertible {
    public var address: IPAddress
    public var prefix: Int

    public init(parsing text: String) throws(InvalidValue) {
        (address, prefix) = try splitCIDR(text, requirePrefix: false)
        var masked = address
        for i in masked.bytes.indices {
            let bitsBefore = i * 8
            let keep = max(0, min(8, prefix - bitsBefore))
            masked.bytes[i] &= UInt8(truncatingIfNeeded: 0xFF << (8 - keep))
        }
        if masked != address {
            throw InvalidValue("\"\(text)\" has host bits set; the network is \(masked)/\(prefix)")
        }
    }

    /// The first and last address of the network, as bytes.
    public var range: (first: [UInt8], last: [UInt8]) {
        var last = address.bytes
        for i in last.indices {
            let hostBits = max(0, min(8, (i + 1) * 8 - prefix))
            last[i] |= UInt8(truncatingIfNeeded: (1 << hostBits) - 1)
        }
        return (address.bytes, last)
    }

    public func overlaps(_ other: IPNetwork) -> Bool {
        address.sharesPrefix(min(prefix, other.prefix), with: other.address)
    }

    public func contains(_ ip: IPAddress) -> Bool {
        address.sharesPrefix(prefix, with: ip)
    }

    public var description: String { "\(address)/\(prefix)" }
}

/// An interface address with its subnet, such as `10.8.0.1/24`.
public struct InterfaceAddress: YAMLScalarParsable, Sendable, Hashable, CustomStringConvertible {
    public var address: IPAddress
    public var prefix: Int

    public init(parsing text: String) throws(InvalidValue) {
        (address, prefix) = try splitCIDR(text, requirePrefix: true)
    }

    public func contains(_ ip: IPAddress) -> Bool { address.sharesPrefix(prefix, with: ip) }
    public var description: String { "\(address)/\(prefix)" }
}

/// `HOST:PORT`, with an IPv6 host in brackets: `10.8.0.1:9430`, `[fd00::1]:9430`, `smtp.example.com:587`.
public struct HostPort: YAMLScalarParsable, Sendable, Hashable, CustomStringConvertible {
    public var host: String
    public var port: Port

    public init(parsing text: String) throws(InvalidValue) {
        let hostPart: Substring, portPart: Substring
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]"), text[text.index(after: close)...].hasPrefix(":") else {
                throw InvalidValue("\"\(text)\" is not HOST:PORT ([IPv6]:PORT for IPv6)")
            }
            hostPart = text[text.index(after: text.startIndex)..<close]
            portPart = text[text.index(close, offsetBy: 2)...]
        } else {
            guard let colon = text.lastIndex(of: ":"), text.firstIndex(of: ":") == colon else {
                throw InvalidValue("\"\(text)\" is not HOST:PORT ([IPv6]:PORT for IPv6)")
            }
            hostPart = text[..<colon]
            portPart = text[text.index(after: colon)...]
        }
        guard let number = Int(portPart), let port = Port(number) else {
            throw InvalidValue("\"\(text)\": the port must be 1-65535")
        }
        let host = String(hostPart)
        guard (try? IPAddress(parsing: host)) != nil || Hostname.isValid(host) else {
            throw InvalidValue("\"\(text)\": \"\(host)\" is neither an IP address nor a host name")
        }
        self.host = host
        self.port = port
    }

    /// The host as an IP address, when it is one.
    public var ip: IPAddress? { try? IPAddress(parsing: host) }
    public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
}

/// DNS host names (RFC 1123).
public enum Hostname {
    public static func isValid(_ name: String) -> Bool {
        guard !name.isEmpty, name.utf8.count <= 253 else { return false }
        return name.split(separator: ".", omittingEmptySubsequences: false).allSatisfy { label in
            label.count >= 1 && label.count <= 63 && label.first != "-" && label.last != "-"
                && label.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-") }
        }
    }
}

/// A host name or an IP address (K3s TLS SANs, endpoints).
public struct HostOrIP: YAMLScalarParsable, Sendable, Hashable, CustomStringConvertible {
    public var text: String

    public init(parsing text: String) throws(InvalidValue) {
        guard (try? IPAddress(parsing: text)) != nil || Hostname.isValid(text) else {
            throw InvalidValue("\"\(text)\" is neither an IP address nor a host name")
        }
        self.text = text
    }

    public var description: String { text }
}

/// A Linux network interface name: 1–15 characters, no `/`, whitespace or `:`.
public struct InterfaceName: YAMLScalarParsable, Sendable, Hashable, CustomStringConvertible {
    public var name: String

    public init(parsing text: String) throws(InvalidValue) {
        guard (1...15).contains(text.utf8.count), text != ".", text != "..",
              text.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || "-_.".contains($0)) }) else {
            throw InvalidValue("\"\(text)\" is not a network interface name (1-15 of a-z A-Z 0-9 - _ .)")
        }
        name = text
    }

    public var description: String { name }
}
