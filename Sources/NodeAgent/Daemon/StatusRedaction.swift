import Reconcilers
import YAML

/// What `/status` must not carry to every VPN peer and local user: the values of the node's
/// secret files wherever they were echoed (an install Job's log printing chart values, a
/// command's stderr), assignments that look like credentials in log lines, and the user
/// information of URLs (a Git error quoting `https://user:token@…`).
enum StatusRedaction {
    static let mark = "<redacted>"

    /// - Parameters:
    ///   - secrets: the contents of the secret files the desired state names (each line of them).
    static func apply(_ value: JSONValue, secrets: [String]) -> JSONValue {
        switch value {
        case .string(let text): return .string(redact(text, secrets: secrets))
        case .array(let items): return .array(items.map { apply($0, secrets: secrets) })
        case .object(let members): return .object(members.map { JSONValue.Member($0.key, apply($0.value, secrets: secrets)) })
        default: return value
        }
    }

    static func redact(_ text: String, secrets: [String]) -> String {
        var out = GitURL.redacted(text)
        // Longest first, so a secret containing another is not half-replaced.
        for secret in secrets.sorted(by: { $0.count > $1.count }) where secret.count >= 4 {
            out = out.replacing(secret, with: mark)
        }
        return redactAssignments(out)
    }

    /// `password: x`, `token=x`, `"secret":"x"`, `Authorization: Bearer x` → the value redacted.
    static func redactAssignments(_ text: String) -> String {
        let words = ["password", "passwd", "token", "secret", "apikey", "api_key", "authorization", "credential", "private_key", "privatekey"]
        let chars = Array(text)
        // ASCII-only lowering, character for character: the two arrays always line up.
        let lower = chars.map { $0.isASCII ? Character($0.lowercased()) : $0 }
        var out = ""
        var i = 0
        while i < chars.count {
            var matched = false
            for word in words {
                let w = Array(word)
                guard i + w.count <= lower.count, Array(lower[i..<(i + w.count)]) == w else { continue }
                // Skip the rest of the key (e.g. postgresPassword"), then the separator.
                var j = i + w.count
                while j < chars.count, chars[j].isLetter || chars[j].isNumber || chars[j] == "_" || chars[j] == "\"" { j += 1 }
                var k = j
                while k < chars.count, chars[k] == " " { k += 1 }
                guard k < chars.count, chars[k] == ":" || chars[k] == "=" else { continue }
                k += 1
                while k < chars.count, chars[k] == " " { k += 1 }
                // A quoted value runs to its closing quote, spaces and all.
                if k < chars.count, chars[k] == "\"" || chars[k] == "'" {
                    let quote = chars[k]
                    k += 1
                    var end = k
                    while end < chars.count, chars[end] != quote, chars[end] != "\n" { end += 1 }
                    guard end > k else { continue }
                    out += String(chars[i..<k]) + mark
                    i = end
                    matched = true
                    break
                }
                // An HTTP scheme word before the value (Bearer, Basic) stays.
                let scheme = String(chars[k...].prefix { $0.isLetter })
                if ["bearer", "basic"].contains(scheme.lowercased()) {
                    k += scheme.count
                    while k < chars.count, chars[k] == " " { k += 1 }
                }
                var end = k
                while end < chars.count, !" \"',;|}\n".contains(chars[end]) { end += 1 }
                guard end > k else { continue }
                out += String(chars[i..<k]) + mark
                i = end
                matched = true
                break
            }
            if !matched {
                out.append(chars[i])
                i += 1
            }
        }
        return out
    }
}

/// Text from the node (log lines, commands' stderr, Git messages) printed to a terminal:
/// escape sequences could rewrite the screen or the title, so control characters are shown
/// as `?`, newlines and tabs as spaces.
enum TerminalText {
    static func sanitised(_ text: String) -> String {
        String(String.UnicodeScalarView(text.unicodeScalars.map { s -> Unicode.Scalar in
            if s == "\n" || s == "\t" || s == "\r" { return " " }
            if s.value < 0x20 || (0x7F...0x9F).contains(s.value) { return "?" }
            return s
        }))
    }
}
