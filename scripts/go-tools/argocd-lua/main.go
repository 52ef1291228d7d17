// Command argocd-lua runs an Argo CD resource health check (health.lua) the way Argo CD does:
// in gopher-lua (Lua 5.1), the engine Argo CD embeds, with only the libraries Argo CD opens for a
// health check configured in argocd-cm (package, base, table and a reduced os; no string, no
// math, unless `resource.customizations.useOpenLibs` is set, which this project does not ask
// users to set), a one-second timeout, and the object decoded into Lua values as Argo CD's
// util/lua decodeValue does.
//
// Usage: argocd-lua health.lua < objects.json
//
// stdin is a JSON array of objects; stdout a JSON array with one {"status", "message"} (or
// {"error"}) per object, in order. A status outside Argo CD's list comes back as Unknown with
// Argo CD's own message, as Argo CD would show it. Built by scripts/go-tool.sh.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"time"

	lua "github.com/yuin/gopher-lua"
)

type result struct {
	Status  string `json:"status,omitempty"`
	Message string `json:"message,omitempty"`
	Error   string `json:"error,omitempty"`
}

// Argo CD's health status codes (gitops-engine pkg/health).
var validStatus = map[string]bool{
	"Unknown": true, "Progressing": true, "Suspended": true,
	"Healthy": true, "Degraded": true, "Missing": true,
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: argocd-lua health.lua < objects.json")
		os.Exit(2)
	}
	script, err := os.ReadFile(os.Args[1])
	if err != nil {
		fmt.Fprintf(os.Stderr, "argocd-lua: %v\n", err)
		os.Exit(2)
	}
	decoder := json.NewDecoder(os.Stdin)
	// Numbers as json.Number, so integers become int64 as they do in Argo CD's unstructured objects.
	decoder.UseNumber()
	var objects []interface{}
	if err := decoder.Decode(&objects); err != nil {
		fmt.Fprintf(os.Stderr, "argocd-lua: stdin is not a JSON array: %v\n", err)
		os.Exit(2)
	}
	results := make([]result, 0, len(objects))
	for _, object := range objects {
		results = append(results, run(string(script), normalise(object)))
	}
	if err := json.NewEncoder(os.Stdout).Encode(results); err != nil {
		fmt.Fprintf(os.Stderr, "argocd-lua: %v\n", err)
		os.Exit(1)
	}
}

// normalise turns json.Number into int64 (or float64), as Kubernetes' unstructured decoding does.
func normalise(value interface{}) interface{} {
	switch v := value.(type) {
	case json.Number:
		if i, err := v.Int64(); err == nil {
			return i
		}
		f, _ := v.Float64()
		return f
	case []interface{}:
		for i := range v {
			v[i] = normalise(v[i])
		}
		return v
	case map[string]interface{}:
		for k := range v {
			v[k] = normalise(v[k])
		}
		return v
	}
	return value
}

func run(script string, object interface{}) result {
	l := lua.NewState(lua.Options{SkipOpenLibs: true})
	defer l.Close()
	for _, pair := range []struct {
		name string
		open lua.LGFunction
	}{
		{lua.LoadLibName, lua.OpenPackage},
		{lua.BaseLibName, lua.OpenBase},
		{lua.TabLibName, lua.OpenTable},
		{lua.OsLibName, openSafeOs},
	} {
		if err := l.CallByParam(lua.P{Fn: l.NewFunction(pair.open), NRet: 0, Protect: true}, lua.LString(pair.name)); err != nil {
			return result{Error: err.Error()}
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	l.SetContext(ctx)
	l.SetGlobal("obj", decodeValue(l, object))
	if err := l.DoString(script); err != nil {
		return result{Error: err.Error()}
	}
	returned := l.Get(-1)
	table, ok := returned.(*lua.LTable)
	if !ok {
		return result{Error: fmt.Sprintf("expect table output from Lua script, not %s", returned.Type())}
	}
	status := luaString(table.RawGetString("status"))
	if !validStatus[status] {
		return result{Status: "Unknown", Message: "Lua returned an invalid health status"}
	}
	return result{Status: status, Message: luaString(table.RawGetString("message"))}
}

func luaString(value lua.LValue) string {
	if value == lua.LNil {
		return ""
	}
	return strings.TrimSpace(value.String())
}

// openSafeOs is Argo CD's reduced os library: only time and date, nothing that touches the
// machine. Argo CD formats os.date with strftime; only the default format is offered here.
func openSafeOs(l *lua.LState) int {
	module := l.SetFuncs(l.NewTable(), map[string]lua.LGFunction{
		"time": func(l *lua.LState) int {
			l.Push(lua.LNumber(time.Now().Unix()))
			return 1
		},
		"date": func(l *lua.LState) int {
			l.Push(lua.LString(time.Now().UTC().Format(time.ANSIC)))
			return 1
		},
	})
	l.SetGlobal(lua.OsLibName, module)
	l.Push(module)
	return 1
}

// decodeValue is Argo CD's util/lua decodeValue: maps become tables with string keys, arrays
// tables with 1-based indexes, numbers LNumber, and anything else nil.
func decodeValue(l *lua.LState, value interface{}) lua.LValue {
	switch converted := value.(type) {
	case bool:
		return lua.LBool(converted)
	case float64:
		return lua.LNumber(converted)
	case string:
		return lua.LString(converted)
	case int64:
		return lua.LNumber(converted)
	case []interface{}:
		arr := l.CreateTable(len(converted), 0)
		for _, item := range converted {
			arr.Append(decodeValue(l, item))
		}
		return arr
	case map[string]interface{}:
		tbl := l.CreateTable(0, len(converted))
		for key, item := range converted {
			tbl.RawSetH(lua.LString(key), decodeValue(l, item))
		}
		return tbl
	}
	return lua.LNil
}
