// SPDX-License-Identifier: GPL-2.0
/* skm_hello: the out-of-tree module of the skm.modsign test fleet; DKMS builds it, the DKMS role signs it. */
#include <linux/init.h>
#include <linux/module.h>

static int __init skm_hello_init(void)
{
	pr_info("skm_hello: loaded\n");
	return 0;
}

static void __exit skm_hello_exit(void)
{
	pr_info("skm_hello: unloaded\n");
}

module_init(skm_hello_init);
module_exit(skm_hello_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("skm.modsign test fleet out-of-tree module");
