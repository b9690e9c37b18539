package monitoring_test

import (
	"fmt"
	"strings"
)

// selector is a vector selector of a PromQL expression: a metric name and its label matchers.
type selector struct {
	Name     string
	Matchers []matcher
}

// matcher is one label matcher of a selector, as written: Op is =, !=, =~ or !~.
type matcher struct {
	Label, Op, Value string
}

// exprInfo is what an expression queries: its selectors, and the labels named by its by,
// without, on, ignoring, group_left and group_right clauses.
type exprInfo struct {
	Selectors []selector
	Grouping  []string
}

// Names returns the metric names of the selectors, in order, each once.
func (e exprInfo) Names() []string {
	var out []string
	seen := map[string]bool{}
	for _, s := range e.Selectors {
		if !seen[s.Name] {
			seen[s.Name] = true
			out = append(out, s.Name)
		}
	}
	return out
}

type tokKind int

const (
	tIdent  tokKind = iota // a name: metric, label, function, keyword
	tString                // a quoted string, unquoted
	tNumber                // a number or a duration
	tPunct                 // an operator or a bracket
	tVar                   // a Grafana variable: $name or ${name}
)

type token struct {
	kind tokKind
	text string
}

func (t token) is(punct string) bool { return t.kind == tPunct && t.text == punct }

func isIdentStart(c byte) bool {
	return c == '_' || c == ':' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
}

func isIdentChar(c byte) bool { return isIdentStart(c) || (c >= '0' && c <= '9') }

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// lexPromQL splits a PromQL expression (possibly holding Grafana variables) into tokens.
func lexPromQL(s string) ([]token, error) {
	var toks []token
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			i++
		case c == '#': // a comment, to the end of the line
			for i < len(s) && s[i] != '\n' {
				i++
			}
		case c == '"' || c == '\'' || c == '`':
			var b strings.Builder
			j := i + 1
			for ; j < len(s) && s[j] != c; j++ {
				if s[j] == '\\' && c != '`' && j+1 < len(s) {
					j++
					switch s[j] {
					case 'n':
						b.WriteByte('\n')
					case 't':
						b.WriteByte('\t')
					default:
						b.WriteByte(s[j])
					}
					continue
				}
				b.WriteByte(s[j])
			}
			if j >= len(s) {
				return nil, fmt.Errorf("unterminated string at offset %d", i)
			}
			toks = append(toks, token{tString, b.String()})
			i = j + 1
		case c == '$':
			j := i + 1
			if j < len(s) && s[j] == '{' {
				end := strings.IndexByte(s[j:], '}')
				if end < 0 {
					return nil, fmt.Errorf("unterminated ${ at offset %d", i)
				}
				j += end + 1
			} else {
				for j < len(s) && isIdentChar(s[j]) {
					j++
				}
			}
			toks = append(toks, token{tVar, s[i:j]})
			i = j
		case isDigit(c) || (c == '.' && i+1 < len(s) && isDigit(s[i+1])):
			j := i + 1
			for j < len(s) && (isIdentChar(s[j]) && s[j] != ':' || s[j] == '.' ||
				(s[j] == '+' || s[j] == '-') && (s[j-1] == 'e' || s[j-1] == 'E') && !strings.HasPrefix(s[i:], "0x")) {
				j++
			}
			toks = append(toks, token{tNumber, s[i:j]})
			i = j
		case isIdentStart(c):
			j := i + 1
			for j < len(s) && isIdentChar(s[j]) {
				j++
			}
			toks = append(toks, token{tIdent, s[i:j]})
			i = j
		default:
			if i+1 < len(s) {
				switch two := s[i : i+2]; two {
				case "==", "!=", "=~", "!~", ">=", "<=":
					toks = append(toks, token{tPunct, two})
					i += 2
					continue
				}
			}
			toks = append(toks, token{tPunct, string(c)})
			i++
		}
	}
	return toks, nil
}

// groupingKeywords take a parenthesised list of label names.
var groupingKeywords = map[string]bool{
	"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true,
}

// keywords are the other names that are no selector: binary operators, modifiers, literals.
var keywords = map[string]bool{
	"and": true, "or": true, "unless": true, "atan2": true, "bool": true, "offset": true,
	"inf": true, "nan": true,
}

// aggregations may be followed by by/without before their parenthesised argument.
var aggregations = map[string]bool{
	"sum": true, "min": true, "max": true, "avg": true, "group": true, "stddev": true,
	"stdvar": true, "count": true, "count_values": true, "bottomk": true, "topk": true,
	"quantile": true, "limitk": true, "limit_ratio": true,
}

// parsePromQL finds the selectors and grouping labels of a PromQL expression. It is no full
// parser (promtool checks the syntax): it tells metric names from functions, aggregations,
// keywords, label names, strings, numbers, durations and Grafana variables.
func parsePromQL(expr string) (exprInfo, error) {
	toks, err := lexPromQL(expr)
	if err != nil {
		return exprInfo{}, err
	}
	var info exprInfo
	peek := func(i int) token {
		if i < len(toks) {
			return toks[i]
		}
		return token{kind: tPunct}
	}
	for i := 0; i < len(toks); i++ {
		t := toks[i]
		switch {
		case t.is("["): // a range or a subquery: durations only
			depth := 0
			for ; i < len(toks); i++ {
				if toks[i].is("[") {
					depth++
				} else if toks[i].is("]") {
					depth--
					if depth == 0 {
						break
					}
				}
			}
			if depth != 0 {
				return exprInfo{}, fmt.Errorf("unbalanced [ in %q", expr)
			}
		case t.is("{"): // a selector without a name before its braces
			ms, j, err := parseMatchers(toks, i)
			if err != nil {
				return exprInfo{}, fmt.Errorf("%w in %q", err, expr)
			}
			sel := selector{}
			for _, m := range ms {
				if m.Label == "__name__" && m.Op == "=" {
					sel.Name = m.Value
				} else {
					sel.Matchers = append(sel.Matchers, m)
				}
			}
			if sel.Name == "" {
				return exprInfo{}, fmt.Errorf("a selector without a metric name in %q", expr)
			}
			info.Selectors = append(info.Selectors, sel)
			i = j
		case t.kind == tIdent:
			lower := strings.ToLower(t.text)
			next := peek(i + 1)
			switch {
			case groupingKeywords[lower]:
				if !next.is("(") {
					continue // group_left without labels
				}
				labels, j, err := parseLabelList(toks, i+1)
				if err != nil {
					return exprInfo{}, fmt.Errorf("%w after %s in %q", err, t.text, expr)
				}
				info.Grouping = append(info.Grouping, labels...)
				i = j
			case keywords[lower]:
			case next.is("("): // a function or an aggregation
			case aggregations[lower] && next.kind == tIdent && groupingKeywords[strings.ToLower(next.text)]:
			default:
				sel := selector{Name: t.text}
				if next.is("{") {
					ms, j, err := parseMatchers(toks, i+1)
					if err != nil {
						return exprInfo{}, fmt.Errorf("%w in %q", err, expr)
					}
					sel.Matchers = ms
					i = j
				}
				info.Selectors = append(info.Selectors, sel)
			}
		}
	}
	return info, nil
}

// parseMatchers reads {label op "value", ...} from toks[i] ('{') and returns the index of
// its '}'. A string alone is a quoted metric name, returned as a __name__ matcher.
func parseMatchers(toks []token, i int) ([]matcher, int, error) {
	var ms []matcher
	i++
	for i < len(toks) && !toks[i].is("}") {
		label := toks[i]
		if label.kind == tString && i+1 < len(toks) && (toks[i+1].is(",") || toks[i+1].is("}")) {
			ms = append(ms, matcher{Label: "__name__", Op: "=", Value: label.text})
			i++
		} else {
			if label.kind != tIdent && label.kind != tString {
				return nil, 0, fmt.Errorf("a label name expected, got %q", label.text)
			}
			if i+2 >= len(toks) {
				return nil, 0, fmt.Errorf("unterminated matcher of %s", label.text)
			}
			op, value := toks[i+1], toks[i+2]
			if op.kind != tPunct || (op.text != "=" && op.text != "!=" && op.text != "=~" && op.text != "!~") {
				return nil, 0, fmt.Errorf("a matcher operator expected after %s, got %q", label.text, op.text)
			}
			if value.kind != tString {
				return nil, 0, fmt.Errorf("a string expected after %s%s, got %q", label.text, op.text, value.text)
			}
			ms = append(ms, matcher{Label: label.text, Op: op.text, Value: value.text})
			i += 3
		}
		if i < len(toks) && toks[i].is(",") {
			i++
		}
	}
	if i >= len(toks) {
		return nil, 0, fmt.Errorf("unterminated {")
	}
	return ms, i, nil
}

// parseLabelList reads (label, ...) from toks[i] ('(') and returns the index of its ')'.
func parseLabelList(toks []token, i int) ([]string, int, error) {
	var labels []string
	for i++; i < len(toks) && !toks[i].is(")"); i++ {
		switch {
		case toks[i].kind == tIdent || toks[i].kind == tString:
			labels = append(labels, toks[i].text)
		case toks[i].is(","):
		default:
			return nil, 0, fmt.Errorf("a label name expected, got %q", toks[i].text)
		}
	}
	if i >= len(toks) {
		return nil, 0, fmt.Errorf("unterminated label list")
	}
	return labels, i, nil
}

// parseTemplateQuery finds the selectors of a Grafana template variable's query:
// label_values(query, label), label_values(label), query_result(query), or PromQL.
func parseTemplateQuery(q string) (exprInfo, error) {
	q = strings.TrimSpace(q)
	for _, fn := range []string{"label_values", "query_result"} {
		if !strings.HasPrefix(q, fn+"(") || !strings.HasSuffix(q, ")") {
			continue
		}
		inner := q[len(fn)+1 : len(q)-1]
		if fn == "label_values" {
			comma := lastTopLevelComma(inner)
			if comma < 0 {
				return exprInfo{}, nil // label_values(label): every series
			}
			inner = inner[:comma]
		}
		return parsePromQL(inner)
	}
	return parsePromQL(q)
}

// lastTopLevelComma is the index of the last comma of s outside brackets and strings, or -1.
func lastTopLevelComma(s string) int {
	depth, last := 0, -1
	var quote byte
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case quote != 0:
			if c == '\\' {
				i++
			} else if c == quote {
				quote = 0
			}
		case c == '"' || c == '\'' || c == '`':
			quote = c
		case c == '(' || c == '{' || c == '[':
			depth++
		case c == ')' || c == '}' || c == ']':
			depth--
		case c == ',' && depth == 0:
			last = i
		}
	}
	return last
}
