package httpapi_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
)

// sqlText recognises a string literal that holds SQL.
var sqlText = regexp.MustCompile(`(?i)\b(select\s.+\sfrom|insert\s+into|update\s+\S+\s+set|delete\s+from|create\s+(table|schema|index|unique|function|trigger)|drop\s+(table|schema|index)|alter\s+table|on\s+conflict|where\s)\b`)

// safeCalls are the functions whose results may go into SQL text: they
// make placeholders, quote identifiers that come from configuration, or
// print numbers.
var safeCalls = map[string]bool{
	"placeholders": true, // "?, ?, ?" for n values
	"Sanitize":     true, // pgx.Identifier{…}.Sanitize(): a quoted identifier
	"Itoa":         true,
	"FormatInt":    true,
	"String":       true, // a strings.Builder of checked parts (see builders)
}

// TestNoSQLIsBuiltFromValues reads the source of the store adapters and
// the relays (every package that reads or writes nvent's tables) and checks that SQL text is only ever made of string
// constants, placeholders and quoted identifiers: no string that holds
// SQL is concatenated, formatted (fmt.Sprintf) or written into a builder
// together with anything else — a parameter, a field, a variable fed by
// one. Values (subjects, ids, keys, collections, data) must reach the
// database as query arguments ($1, ?), and identifiers (the schema) from
// configuration only, quoted.
func TestNoSQLIsBuiltFromValues(t *testing.T) {
	var files []string
	for _, dir := range []string{"../storage", "../relay"} {
		_ = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
			if err == nil && !d.IsDir() && strings.HasSuffix(path, ".go") && !strings.HasSuffix(path, "_test.go") &&
				!strings.Contains(path, "storagetest") {
				files = append(files, path)
			}
			return nil
		})
	}
	if len(files) < 10 {
		t.Fatalf("found only %d source files to check", len(files))
	}
	var problems []string
	sqlFiles := 0
	for _, path := range files {
		fset := token.NewFileSet()
		f, err := parser.ParseFile(fset, path, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		c := newSQLChecker(fset, f, consts(filepath.Dir(path)))
		c.check()
		if c.sawSQL {
			sqlFiles++
		}
		problems = append(problems, c.problems...)
	}
	if sqlFiles < 5 {
		t.Fatalf("only %d files hold SQL: the checker no longer recognises it", sqlFiles)
	}
	sort.Strings(problems)
	for _, p := range problems {
		t.Error(p)
	}
}

// consts returns the names of the constants declared anywhere in the
// package in dir (every file, tests excluded).
func consts(dir string) map[string]bool {
	names := map[string]bool{}
	matches, _ := filepath.Glob(filepath.Join(dir, "*.go"))
	for _, path := range matches {
		if strings.HasSuffix(path, "_test.go") {
			continue
		}
		if f, err := parser.ParseFile(token.NewFileSet(), path, nil, 0); err == nil {
			addConsts(names, f)
		}
	}
	return names
}

func addConsts(names map[string]bool, f *ast.File) {
	ast.Inspect(f, func(n ast.Node) bool {
		if g, ok := n.(*ast.GenDecl); ok && g.Tok == token.CONST {
			for _, spec := range g.Specs {
				for _, name := range spec.(*ast.ValueSpec).Names {
					names[name.Name] = true
				}
			}
		}
		return true
	})
}

// TestTheSQLCheckerCatchesBuiltSQL runs the checker on code that builds
// SQL from values in each way it knows, and on code that does not.
func TestTheSQLCheckerCatchesBuiltSQL(t *testing.T) {
	bad := map[string]string{
		"concatenation": `func f(subject string) { db.Query("SELECT * FROM events WHERE subject = '" + subject + "'") }`,
		"Sprintf":       `func f(key string) { db.Exec(fmt.Sprintf("DELETE FROM kv WHERE key = '%s'", key)) }`,
		"builder":       `func f(v string) { var b strings.Builder; b.WriteString("SELECT x FROM t WHERE a = "); b.WriteString(v); db.Query(b.String()) }`,
		"variable":      `func f(col string) { q := "SELECT 1 FROM t WHERE "; q += col; db.Query(q) }`,
		"field":         `func (s *S) f() { db.Exec("DROP TABLE " + s.table) }`,
		"package var":   `var table = os.Getenv("T"); func f() { db.Exec("DELETE FROM " + table + " WHERE a = 1") }`,
	}
	good := map[string]string{
		"literal":      "func f(k string) { db.Query(`SELECT v FROM kv WHERE key = $1`, k) }",
		"constants":    "const cols = `a, b`; func f() { db.Query(`SELECT ` + cols + ` FROM t WHERE a = ?`) }",
		"placeholders": "func f(ts []string) { q := `SELECT a FROM t WHERE type IN (` + placeholders(len(ts)) + `)`; db.Query(q) }",
		"identifier":   "func f(schema string) { db.Exec(`CREATE SCHEMA IF NOT EXISTS ` + pgx.Identifier{schema}.Sanitize()) }",
		"builder":      "func f(desc bool) { var q strings.Builder; q.WriteString(`SELECT a FROM t WHERE b = $1`); if desc { q.WriteString(` ORDER BY a DESC`) }; db.Query(q.String()) }",
		"no SQL":       `func f(name string) error { return errors.New("reading " + name) }`,
	}
	check := func(src string) []string {
		fset := token.NewFileSet()
		f, err := parser.ParseFile(fset, "x.go", "package x\n"+src, 0)
		if err != nil {
			t.Fatalf("%s: %v", src, err)
		}
		names := map[string]bool{}
		addConsts(names, f)
		c := newSQLChecker(fset, f, names)
		c.check()
		return c.problems
	}
	for name, src := range bad {
		if len(check(src)) == 0 {
			t.Errorf("%s: not caught", name)
		}
	}
	for name, src := range good {
		if p := check(src); len(p) != 0 {
			t.Errorf("%s: flagged %v", name, p)
		}
	}
}

type sqlChecker struct {
	fset     *token.FileSet
	file     *ast.File
	consts   map[string]bool
	problems []string
	sawSQL   bool
}

func newSQLChecker(fset *token.FileSet, f *ast.File, consts map[string]bool) *sqlChecker {
	return &sqlChecker{fset: fset, file: f, consts: consts}
}

func (c *sqlChecker) report(n ast.Node, format string) {
	c.problems = append(c.problems, c.fset.Position(n.Pos()).String()+": "+format)
}

// holdsSQL reports whether the string expression e is SQL text: a
// literal that holds SQL, or a concatenation or fmt.Sprint… of one.
// (A call that merely takes SQL as an argument, such as Query, is not.)
func (c *sqlChecker) holdsSQL(e ast.Expr) bool {
	switch e := e.(type) {
	case *ast.BasicLit:
		if s, err := strconv.Unquote(e.Value); e.Kind == token.STRING && err == nil && sqlText.MatchString(s) {
			c.sawSQL = true
			return true
		}
	case *ast.ParenExpr:
		return c.holdsSQL(e.X)
	case *ast.BinaryExpr:
		return e.Op == token.ADD && (c.holdsSQL(e.X) || c.holdsSQL(e.Y))
	case *ast.CallExpr:
		if isFormat(e) {
			return c.anyHoldsSQL(e.Args)
		}
	}
	return false
}

// isFormat reports whether call is fmt.Sprint, Sprintf, Sprintln or
// Fprintf (into a builder).
func isFormat(call *ast.CallExpr) bool {
	sel, ok := call.Fun.(*ast.SelectorExpr)
	if !ok {
		return false
	}
	pkg, ok := sel.X.(*ast.Ident)
	return ok && pkg.Name == "fmt" && (strings.HasPrefix(sel.Sel.Name, "Sprint") || sel.Sel.Name == "Fprintf")
}

// check walks every function: each expression that builds SQL text must
// be safe, and so must every variable it is assigned to or written into.
func (c *sqlChecker) check() {
	// Package-level var/const initialisers that build SQL.
	for _, decl := range c.file.Decls {
		if g, ok := decl.(*ast.GenDecl); ok {
			for _, spec := range g.Specs {
				if vs, ok := spec.(*ast.ValueSpec); ok {
					for _, v := range vs.Values {
						c.checkExpr(v, nil)
					}
				}
			}
		}
	}
	for _, decl := range c.file.Decls {
		fn, ok := decl.(*ast.FuncDecl)
		if !ok || fn.Body == nil {
			continue
		}
		s := &scope{assigns: map[string][]ast.Expr{}, writes: map[string][]ast.Expr{}}
		ast.Inspect(fn.Body, func(n ast.Node) bool {
			switch n := n.(type) {
			case *ast.AssignStmt:
				for i, lhs := range n.Lhs {
					if id, ok := lhs.(*ast.Ident); ok && i < len(n.Rhs) && len(n.Lhs) == len(n.Rhs) {
						s.assigns[id.Name] = append(s.assigns[id.Name], n.Rhs[i])
					}
				}
			case *ast.ValueSpec:
				for i, id := range n.Names {
					if i < len(n.Values) {
						s.assigns[id.Name] = append(s.assigns[id.Name], n.Values[i])
					}
				}
			case *ast.CallExpr:
				if sel, ok := n.Fun.(*ast.SelectorExpr); ok && (sel.Sel.Name == "WriteString" || sel.Sel.Name == "WriteByte") {
					if id, ok := sel.X.(*ast.Ident); ok && len(n.Args) == 1 {
						s.writes[id.Name] = append(s.writes[id.Name], n.Args[0])
					}
				}
			}
			return true
		})
		// Builders and variables that ever hold SQL: every part must be safe.
		for name, parts := range s.writes {
			if c.anyHoldsSQL(parts) {
				s.builders = append(s.builders, name)
				for _, p := range parts {
					if !c.safe(p, s, map[string]bool{}) {
						c.report(p, "a value is written into the SQL builder "+name)
					}
				}
			}
		}
		for name, rhs := range s.assigns {
			if c.anyHoldsSQL(rhs) {
				for _, e := range rhs {
					if !c.safe(e, s, map[string]bool{}) {
						c.report(e, "a value goes into the SQL variable "+name)
					}
				}
			}
		}
		ast.Inspect(fn.Body, func(n ast.Node) bool {
			if e, ok := n.(ast.Expr); ok {
				return c.checkExpr(e, s)
			}
			return true
		})
	}
}

func (c *sqlChecker) anyHoldsSQL(es []ast.Expr) bool {
	for _, e := range es {
		if c.holdsSQL(e) {
			return true
		}
	}
	return false
}

// checkExpr checks a concatenation or formatting that holds SQL; it
// returns false when it reported (no need to look inside).
func (c *sqlChecker) checkExpr(e ast.Expr, s *scope) bool {
	switch e := e.(type) {
	case *ast.BinaryExpr:
		if e.Op == token.ADD && c.holdsSQL(e) && !c.safe(e, s, map[string]bool{}) {
			c.report(e, "SQL text is concatenated with a value")
			return false
		}
	case *ast.CallExpr:
		if isFormat(e) && c.anyHoldsSQL(e.Args) {
			for _, a := range e.Args {
				if !c.safe(a, s, map[string]bool{}) {
					c.report(e, "SQL text is formatted with a value ("+e.Fun.(*ast.SelectorExpr).Sel.Name+")")
					return false
				}
			}
		}
	}
	return true
}

// scope is what a function assigns to its variables and writes into its
// builders.
type scope struct {
	assigns  map[string][]ast.Expr
	writes   map[string][]ast.Expr
	builders []string
}

// safe reports whether e can only ever be text from the source: literals,
// constants, safe calls, and variables assigned only such things.
func (c *sqlChecker) safe(e ast.Expr, s *scope, seen map[string]bool) bool {
	switch e := e.(type) {
	case *ast.BasicLit:
		return true
	case *ast.ParenExpr:
		return c.safe(e.X, s, seen)
	case *ast.BinaryExpr:
		return e.Op == token.ADD && c.safe(e.X, s, seen) && c.safe(e.Y, s, seen)
	case *ast.Ident:
		if c.consts[e.Name] {
			return true
		}
		if s == nil || seen[e.Name] {
			return seen[e.Name] // a variable built from itself (q += …) is as safe as its other parts
		}
		rhs, ok := s.assigns[e.Name]
		if !ok {
			return false // a parameter, or a package variable: not known to be constant
		}
		seen[e.Name] = true
		for _, r := range rhs {
			if !c.safe(r, s, seen) {
				return false
			}
		}
		return true
	case *ast.CallExpr:
		var name string
		switch f := e.Fun.(type) {
		case *ast.Ident:
			name = f.Name
		case *ast.SelectorExpr:
			name = f.Sel.Name
			if name == "String" {
				id, ok := f.X.(*ast.Ident)
				return ok && s != nil && contains(s.builders, id.Name)
			}
		}
		return safeCalls[name]
	}
	return false
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
