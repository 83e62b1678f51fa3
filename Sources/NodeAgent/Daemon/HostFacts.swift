#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import Reconcilers

/// Facts about the node the alerting rules need, measured after each pass: whether the
/// WireGuard interface is up and when each peer last shook hands, and when K3s's
/// certificates expire.
enum HostFacts {
    static func record(_ platform: Platform, host: Host, metrics: AgentMetrics) async {
        if let wg = platform.spec.wireguard {
            let iface = wg.interface.description
            // Kernel objects are this network namespace's, whatever --root says.
            let flags = (try? RootedFileSystem(root: "/").read("/sys/class/net/\(iface)/flags")).flatMap { $0 }
            let up = flags.map { String(decoding: $0, as: UTF8.self).filter { !$0.isWhitespace } }
                .flatMap { Int($0.dropFirst(2), radix: 16) }.map { $0 & 1 == 1 } ?? false
            var handshakes: [(peer: String, at: Double)] = []
            if up, let out = try? await host.commands.run(Command("wg", ["show", iface, "latest-handshakes"], timeout: .seconds(10))), out.exitCode == 0 {
                let names = Dictionary(wg.peers.map { ($0.publicKey.description, $0.name.value) }, uniquingKeysWith: { a, _ in a })
                for line in out.stdout.split(separator: "\n") {
                    let parts = line.split(separator: "\t")
                    guard parts.count == 2, let name = names[String(parts[0])], let at = Double(parts[1]), at > 0 else { continue }
                    handshakes.append((name, at))
                }
            }
            metrics.wireguard(interface: iface, up: up, handshakes: handshakes)
        }
        if platform.spec.k3s != nil {
            var expiries: [(file: String, at: Double)] = []
            for dir in ["/var/lib/rancher/k3s/server/tls", "/var/lib/rancher/k3s/agent"] {
                for name in (try? host.files.list(dir)) ?? nil ?? [] where name.hasSuffix(".crt") {
                    guard let pem = try? host.files.read("\(dir)/\(name)"), let notAfter = Certificates.notAfter(pem: pem) else { continue }
                    expiries.append(("\(dir.hasSuffix("agent") ? "agent" : "server/tls")/\(name)", Double(notAfter.millisecondsSinceEpoch) / 1000))
                }
            }
            metrics.k3sCertificates(expiries)
        }
    }
}

/// Just enough X.509 to read a certificate's `notAfter`: PEM → DER → tbsCertificate → validity.
enum Certificates {
    static func notAfter(pem: [UInt8]) -> Timestamp? {
        // The first certificate block (a chain file starts with the leaf).
        let lines = String(decoding: pem, as: UTF8.self).split(whereSeparator: \.isNewline).map { $0.filter { !$0.isWhitespace } }
        guard let begin = lines.firstIndex(of: "-----BEGINCERTIFICATE-----"),
              let end = lines[begin...].firstIndex(of: "-----ENDCERTIFICATE-----") else { return nil }
        let base64 = lines[(begin + 1)..<end].joined()
        guard let der = Data(base64Encoded: String(base64)) else { return nil }
        return notAfter(der: [UInt8](der))
    }

    static func notAfter(der: [UInt8]) -> Timestamp? {
        var reader = DER(bytes: der[...])
        guard var certificate = reader.enter(0x30), var tbs = certificate.enter(0x30) else { return nil }
        if tbs.peek == 0xA0 { _ = tbs.skip() }            // [0] version
        guard tbs.skip(), tbs.skip(), tbs.skip(),           // serial, signature algorithm, issuer
              var validity = tbs.enter(0x30), validity.skip(), let (tag, value) = validity.next() else { return nil }
        let s = String(decoding: value, as: UTF8.self)
        // UTCTime YYMMDDHHMMSSZ (years 1950-2049) or GeneralizedTime YYYYMMDDHHMMSSZ.
        let full: String
        switch tag {
        case 0x17 where s.count == 13: full = (Int(s.prefix(2)).map { $0 >= 50 ? "19" : "20" } ?? "20") + s
        case 0x18 where s.count == 15: full = s
        default: return nil
        }
        let c = Array(full)
        let iso = "\(String(c[0..<4]))-\(String(c[4..<6]))-\(String(c[6..<8]))T\(String(c[8..<10])):\(String(c[10..<12])):\(String(c[12..<14]))Z"
        return Timestamp(rfc3339: iso)
    }

    struct DER {
        var bytes: ArraySlice<UInt8>

        var peek: UInt8? { bytes.first }

        /// The next element's tag and contents.
        mutating func next() -> (UInt8, ArraySlice<UInt8>)? {
            guard bytes.count >= 2 else { return nil }
            let tag = bytes[bytes.startIndex]
            var i = bytes.startIndex + 1
            var length = Int(bytes[i])
            i += 1
            if length & 0x80 != 0 {
                let n = length & 0x7F
                guard n >= 1, n <= 4, bytes.endIndex - i >= n else { return nil }
                length = 0
                for _ in 0..<n {
                    length = length << 8 | Int(bytes[i])
                    i += 1
                }
            }
            guard bytes.endIndex - i >= length else { return nil }
            let value = bytes[i..<(i + length)]
            bytes = bytes[(i + length)...]
            return (tag, value)
        }

        mutating func skip() -> Bool { next() != nil }

        mutating func enter(_ tag: UInt8) -> DER? {
            guard let (t, value) = next(), t == tag else { return nil }
            return DER(bytes: value)
        }
    }
}
