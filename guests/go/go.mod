module assemblex/guests

go 1.24
