package deploy_test

import (
	"bufio"
	"fmt"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// unit is a parsed systemd unit file: section, then key, then every value it was given, in
// order (Environment= may be given several times).
type unit map[string]map[string][]string

// last is the value that counts for a key given once or more: the last one.
func (u unit) last(section, key string) (string, bool) {
	vs := u[section][key]
	if len(vs) == 0 {
		return "", false
	}
	return vs[len(vs)-1], true
}

// parseUnit reads a unit file as systemd does: sections, Key=Value lines, comments
// starting with '#' or ';', and lines continued with a trailing backslash.
func parseUnit(text string) (unit, error) {
	u := unit{}
	section := ""
	var pending string
	sc := bufio.NewScanner(strings.NewReader(text))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if pending == "" && (line == "" || line[0] == '#' || line[0] == ';') {
			continue
		}
		if strings.HasSuffix(line, `\`) {
			pending += strings.TrimSuffix(line, `\`) + " "
			continue
		}
		line, pending = pending+line, ""
		if strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]") {
			section = line[1 : len(line)-1]
			if u[section] == nil {
				u[section] = map[string][]string{}
			}
			continue
		}
		key, value, ok := strings.Cut(line, "=")
		if !ok || section == "" {
			return nil, fmt.Errorf("line %d: %q is neither a [Section] nor a Key=Value in one", n, line)
		}
		key = strings.TrimSpace(key)
		u[section][key] = append(u[section][key], strings.TrimSpace(value))
	}
	return u, sc.Err()
}

// splitAssignments splits an Environment= value into its assignments: separated by white
// space, each possibly in double or single quotes.
func splitAssignments(v string) []string {
	var out []string
	var cur strings.Builder
	var quote rune
	inWord := false
	for _, r := range v {
		switch {
		case quote != 0 && r == quote:
			quote = 0
		case quote != 0:
			cur.WriteRune(r)
		case r == '"' || r == '\'':
			quote, inWord = r, true
		case r == ' ' || r == '\t':
			if inWord {
				out = append(out, cur.String())
				cur.Reset()
				inWord = false
			}
		default:
			cur.WriteRune(r)
			inWord = true
		}
	}
	if inWord {
		out = append(out, cur.String())
	}
	return out
}

// parseEnvFile reads an EnvironmentFile= as systemd does: KEY=VALUE lines, comments
// starting with '#' or ';', values possibly quoted.
func parseEnvFile(text string) (map[string]string, error) {
	env := map[string]string{}
	for n, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' || line[0] == ';' {
			continue
		}
		key, value, ok := strings.Cut(line, "=")
		if !ok {
			return nil, fmt.Errorf("line %d: %q is no KEY=VALUE", n+1, line)
		}
		value = strings.TrimSpace(value)
		if len(value) >= 2 && (value[0] == '"' || value[0] == '\'') && value[len(value)-1] == value[0] {
			value = value[1 : len(value)-1]
		}
		env[strings.TrimSpace(key)] = value
	}
	return env, nil
}

// hostSpecifiers are the unit specifiers that differ from host to host: a replica ID made
// from one is unique to its host.
var hostSpecifiers = map[string]string{
	"%H": "host-1.example.internal",          // host name
	"%l": "host-1",                           // short host name
	"%m": "0123456789abcdef0123456789abcdef", // machine ID
	"%b": "fedcba9876543210fedcba9876543210", // boot ID
}

// expandSpecifiers replaces the host specifiers of v with sample values.
func expandSpecifiers(v string) string {
	for spec, sample := range hostSpecifiers {
		v = strings.ReplaceAll(v, spec, sample)
	}
	return strings.ReplaceAll(v, "%%", "%")
}

func hasHostSpecifier(v string) bool {
	for spec := range hostSpecifiers {
		if strings.Contains(strings.ReplaceAll(v, "%%", ""), spec) {
			return true
		}
	}
	return false
}

// timeSpan parses a systemd time span: "45", "45s", "1min 30s", "2m", "500ms".
var spanPart = regexp.MustCompile(`^\s*(\d+(?:\.\d+)?)\s*([a-z]*)`)

var spanUnits = map[string]time.Duration{
	"": time.Second, "s": time.Second, "sec": time.Second, "second": time.Second, "seconds": time.Second,
	"ms": time.Millisecond, "msec": time.Millisecond,
	"us": time.Microsecond, "usec": time.Microsecond,
	"m": time.Minute, "min": time.Minute, "minute": time.Minute, "minutes": time.Minute,
	"h": time.Hour, "hr": time.Hour, "hour": time.Hour, "hours": time.Hour,
}

func timeSpan(v string) (time.Duration, error) {
	rest := strings.TrimSpace(v)
	if rest == "" || rest == "infinity" {
		return 0, fmt.Errorf("%q sets no bound", v)
	}
	var total time.Duration
	for rest != "" {
		m := spanPart.FindStringSubmatch(rest)
		if m == nil {
			return 0, fmt.Errorf("%q is no systemd time span", v)
		}
		unit, ok := spanUnits[m[2]]
		if !ok {
			return 0, fmt.Errorf("%q: unknown unit %q", v, m[2])
		}
		f, err := strconv.ParseFloat(m[1], 64)
		if err != nil {
			return 0, err
		}
		total += time.Duration(f * float64(unit))
		rest = strings.TrimSpace(rest[len(m[0]):])
	}
	return total, nil
}

// systemdEnv is the environment the unit gives its process: its Environment= assignments,
// host specifiers expanded, overridden by the example EnvironmentFile=.
func systemdEnv(u unit, envFile map[string]string) map[string]string {
	env := map[string]string{}
	for _, v := range u["Service"]["Environment"] {
		for _, a := range splitAssignments(v) {
			if key, value, ok := strings.Cut(a, "="); ok {
				env[key] = expandSpecifiers(value)
			}
		}
	}
	for k, v := range envFile {
		env[k] = v
	}
	return env
}

// envFileName is the base name of an EnvironmentFile= value ("-" marks an optional one).
func envFileName(v string) string {
	return filepath.Base(strings.TrimPrefix(v, "-"))
}
