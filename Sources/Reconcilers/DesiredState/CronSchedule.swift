public import YAML

/// A 5-field cron expression (`minute hour day-of-month month day-of-week`), evaluated in UTC.
///
/// Each field takes `*`, `N`, `A-B`, any of those with `/STEP`, and comma lists; months and
/// weekdays also take names (`jan`, `mon`); weekday 7 is Sunday, like 0. As in Vixie cron, when
/// both day fields are restricted a day matches if either does.
public struct CronSchedule: YAMLScalarParsable, Sendable, Hashable, CustomStringConvertible {
    public var expression: String
    public var minutes: Set<Int>
    public var hours: Set<Int>
    public var daysOfMonth: Set<Int>
    public var months: Set<Int>
    public var daysOfWeek: Set<Int>
    /// Whether the day-of-month / day-of-week field was `*` (matters for the either-day rule).
    public var anyDayOfMonth: Bool
    public var anyDayOfWeek: Bool

    private static let fields: [(name: String, range: ClosedRange<Int>, names: [String])] = [
        ("minute", 0...59, []),
        ("hour", 0...23, []),
        ("day of month", 1...31, []),
        ("month", 1...12, ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]),
        ("day of week", 0...7, ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]),
    ]

    public init(parsing text: String) throws(InvalidValue) {
        let parts = text.split(whereSeparator: { $0 == " " || $0 == "\t" })
        guard parts.count == 5 else {
            throw InvalidValue("\"\(text)\" is not a 5-field cron expression (minute hour day-of-month month day-of-week), e.g. \"0 3 * * *\"")
        }
        var sets: [Set<Int>] = []
        for (i, part) in parts.enumerated() {
            sets.append(try CronSchedule.parseField(String(part), CronSchedule.fields[i]))
        }
        expression = text
        (minutes, hours, daysOfMonth, months) = (sets[0], sets[1], sets[2], sets[3])
        daysOfWeek = Set(sets[4].map { $0 == 7 ? 0 : $0 })
        anyDayOfMonth = parts[2].hasPrefix("*")
        anyDayOfWeek = parts[4].hasPrefix("*")
        if !months.contains(where: { m in daysOfMonth.contains { $0 <= CronSchedule.maxDays[m - 1] } }), anyDayOfWeek {
            throw InvalidValue("\"\(text)\" never fires: no chosen month has the chosen day of month")
        }
    }

    static let maxDays = [31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]

    private static func parseField(_ text: String, _ field: (name: String, range: ClosedRange<Int>, names: [String])) throws(InvalidValue) -> Set<Int> {
        var out = Set<Int>()
        for item in text.split(separator: ",", omittingEmptySubsequences: false) {
            let pieces = item.split(separator: "/", omittingEmptySubsequences: false)
            guard pieces.count <= 2, !pieces[0].isEmpty else { throw invalid(text, field) }
            var step = 1
            if pieces.count == 2 {
                guard let s = Int(pieces[1]), s >= 1, s <= field.range.upperBound else { throw invalid(text, field) }
                step = s
            }
            var low: Int, high: Int
            if pieces[0] == "*" {
                (low, high) = (field.range.lowerBound, field.range.upperBound)
            } else {
                let bounds = pieces[0].split(separator: "-", omittingEmptySubsequences: false)
                guard bounds.count <= 2 else { throw invalid(text, field) }
                low = try value(bounds[0], text, field)
                high = bounds.count == 2 ? try value(bounds[1], text, field) : (pieces.count == 2 ? field.range.upperBound : low)
                guard low <= high else {
                    throw InvalidValue("cron \(field.name) \"\(text)\": range \(low)-\(high) runs backwards")
                }
            }
            out.formUnion(stride(from: low, through: high, by: step))
        }
        return out
    }

    private static func value(_ s: Substring, _ text: String, _ field: (name: String, range: ClosedRange<Int>, names: [String])) throws(InvalidValue) -> Int {
        if let index = field.names.firstIndex(of: s.lowercased()) {
            return field.range.lowerBound == 0 ? index : index + 1
        }
        guard let n = Int(s), field.range.contains(n) else {
            throw InvalidValue("cron \(field.name) \"\(text)\": \(s) is outside \(field.range.lowerBound)-\(field.range.upperBound)")
        }
        return n
    }

    private static func invalid(_ text: String, _ field: (name: String, range: ClosedRange<Int>, names: [String])) -> InvalidValue {
        InvalidValue("cron \(field.name) \"\(text)\" is not valid; use *, N, A-B, */STEP or comma lists")
    }

    public var description: String { expression }
}
