// The test's driver for README's verify-go snippet (tests/integration/test_readme_snippets.py), built with it:
// stdin: one JSON case per line {"scheme", "secret", "headers", "body" (base64)}; stdout: "true" or
// "false: REASON" each. Headers are looked up by name in any case, as http.Header.Get does.
package main

import (
	"bufio"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"strings"
)

type verifyCase struct {
	Scheme  string            `json:"scheme"`
	Secret  string            `json:"secret"`
	Headers map[string]string `json:"headers"`
	Body    string            `json:"body"`
}

func main() {
	scanner := bufio.NewScanner(os.Stdin)
	scanner.Buffer(make([]byte, 1<<20), 1<<24)
	for scanner.Scan() {
		if strings.TrimSpace(scanner.Text()) == "" {
			continue
		}
		var c verifyCase
		if err := json.Unmarshal(scanner.Bytes(), &c); err != nil {
			fmt.Println("error:", err)
			continue
		}
		headers := map[string]string{}
		for name, value := range c.Headers {
			headers[strings.ToLower(name)] = value
		}
		body, err := base64.StdEncoding.DecodeString(c.Body)
		if err != nil {
			fmt.Println("error:", err)
			continue
		}
		get := func(name string) string { return headers[strings.ToLower(name)] }
		if err := FromRelay(c.Secret, get, body, c.Scheme); err != nil {
			fmt.Println("false:", err)
		} else {
			fmt.Println("true")
		}
	}
}
