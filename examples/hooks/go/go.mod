module example.com/manager-operator/hook

go 1.22
